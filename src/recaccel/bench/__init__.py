"""`recaccel bench`: the served system measured end to end under MLPerf LoadGen.

workload.py builds the requests; sut.py sends them over keep-alive HTTP as LoadGen issues them,
and books.py keeps count of how each ended; loadgen.py runs LoadGen's scenarios, reads its
verdict (loadgen_log.py) and the server's CPU time (cpu.py); search.py chooses the QPS to try
next when looking for the highest one within the latency bound.
"""
