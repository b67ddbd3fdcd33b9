"""filedrop: load files dropped into S3 exactly once into PostgreSQL staging (DESIGN.md).

Layers, lowest first (enforced by the import-linter contracts in pyproject.toml):

* pure models and decisions — ``config``, ``routes``, ``objects``, ``protocol``, ``csvscan`` (how CSV
  bytes are read, the same on every path), ``sql``, ``events``, ``sample``: no service clients,
  unit-testable without any server;
* adapters, the only modules that talk to PostgreSQL or S3 — ``warehouse``, ``sources``, ``history``,
  and ``loader`` (the direct engine and the load protocol);
* entry points — ``pipeline`` (discover, match, load) and ``cli``.
"""

__version__ = "0.1.0"
