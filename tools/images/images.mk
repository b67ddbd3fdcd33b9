# The repository's two images, built without a Docker daemon or a registry (tools/images/README.md).
# Included by the top-level Makefile. Needs root (mmdebstrap, buildah); only the standard library.
#
#   make images                 build docker.io/library/filedrop:$(IMAGE_TAG) and filedrop-spark:$(IMAGE_TAG)
#                               as OCI archives in ~/.cache/filedrop/images (only what changed is rebuilt)
#   make images-clean           remove the buildah storage, the archives and result.json

IMAGE_TAG ?= dev

.PHONY: images images-clean

images:
	@$(PYTHON) -m tools.images build --tag "$(IMAGE_TAG)"

images-clean:
	@$(PYTHON) -m tools.images clean
