"""The Spark engine (DESIGN §3 "Engines", issue 5): a PySpark job that fills the per-load table of the one
load protocol in :mod:`filedrop.load.session`.

Layers inside this package, lowest first:

* :mod:`~filedrop.spark.jars`, :mod:`~filedrop.spark.conf`, :mod:`~filedrop.spark.plan` — pure: pinned jar
  versions, Spark/S3A settings from the environment, and the record-numbering plan over Hadoop splits.
* :mod:`~filedrop.spark.tasks` — what runs in the Python workers (pyarrow + ``COPY`` through the warehouse
  client), no pyspark.
* :mod:`~filedrop.spark.session`, :mod:`~filedrop.spark.engine` — adapters: the SparkSession and
  :class:`~filedrop.spark.engine.SparkEngine` (registered in ``filedrop.load.engine.ENGINES``).
* :mod:`~filedrop.spark.job` — the ``spark-submit`` main file.

Importing this package imports nothing from pyspark; only the engine and session modules need it.
"""
