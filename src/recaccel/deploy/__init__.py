"""Scale out on existing engines: a Triton model repository, and a Ray Serve application."""
