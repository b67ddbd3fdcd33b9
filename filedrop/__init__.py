"""filedrop: load files dropped into S3 exactly once into PostgreSQL staging (DESIGN.md).

One package per box of the design, each depending only on the ones below it (import-linter contracts in
pyproject.toml):

* ``cli`` — the ``filedrop`` command;
* runtimes, independent of each other — ``cluster`` (the kopf operator, the SQS bridge, loader Jobs),
  ``local`` (``filedrop run``: the same loads in one process), ``analytics`` (dbt, export, docs, Argo);
* engines — ``spark`` (the Spark engine and its SparkApplication), ``load`` (the load protocol and the
  direct engine);
* ``warehouse`` — the only package that talks to PostgreSQL: one client, the schema, the history, SQL text;
* the shared vocabulary at the root, pure: ``config``, ``routes``, ``objects``, ``events``, ``protocol``,
  ``csvscan`` and ``csvrecords`` (how CSV bytes are read, the same on every path), ``exitcodes``.
"""

__version__ = "0.1.0"
