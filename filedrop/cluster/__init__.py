"""The cluster runtime (DESIGN §2): the kopf operator and the SQS bridge.

* :mod:`~filedrop.cluster.handlers` — the kopf handlers, thin: one follower per FileDrop
  (:mod:`~filedrop.cluster.follow`) woken by Job and SparkApplication events;
* :mod:`~filedrop.cluster.controller` — one step of a FileDrop: facts in, the pure state machine
  (:mod:`~filedrop.cluster.reconcile`) decides, the controller acts (status, events, Jobs);
* :mod:`~filedrop.cluster.view` (a FileDrop parsed once), :mod:`~filedrop.cluster.settings` (all settings),
  :mod:`~filedrop.cluster.history` (what the operator asks the load history);
* :mod:`~filedrop.cluster.bridge` — S3 events from SQS into FileDrops; :mod:`~filedrop.cluster.kube`,
  :mod:`~filedrop.cluster.jobs` (the loader Job), :mod:`~filedrop.cluster.resources`,
  :mod:`~filedrop.cluster.metrics`.
"""
