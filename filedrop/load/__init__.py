"""Loading one file exactly once (DESIGN §3).

* :mod:`~filedrop.load.session` — the protocol: claim, decide, parse, apply in one short transaction,
  record every outcome;
* :mod:`~filedrop.load.engine` — what an engine is and what all engines share (header, fast-path and
  date-format checks, the registry);
* :mod:`~filedrop.load.direct` — the direct engine (PostgreSQL ``COPY``, then a tolerant pass on bad data);
* :mod:`~filedrop.load.sources` — reading objects from S3 or a directory (listing, streaming, checks).

The Spark engine is :mod:`filedrop.spark`; it registers itself here.
"""
