"""The repository's images built without a Docker daemon or a registry (tools/images/README.md):
local stand-ins for the public base images from Debian packages (``recipes.py``, ``rootfs.py``), then
``buildah bud`` of ``operator/Dockerfile``, ``spark_images/Dockerfile`` and, for this machine's cluster,
``tools/k8s/spark-operator/Dockerfile`` (``build.py``). Run
``python -m tools.images build`` from the repository root."""
