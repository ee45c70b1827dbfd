"""The serving data plane: front processes on one socket, in-process lanes, worker pools."""
