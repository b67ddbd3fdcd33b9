"""The local runtime (``filedrop run``): discover files in a directory, a bucket or a queue, match them to
routes and load them in this process (:mod:`~filedrop.local.pipeline`); and the sample generator
(:mod:`~filedrop.local.sample`)."""
