# The repository's images, built without a Docker daemon or a registry (tools/images/README.md).
# Included by the top-level Makefile. Needs root (mmdebstrap, buildah); only the standard library.
#
#   make images                 build docker.io/library/filedrop:$(IMAGE_TAG), filedrop-spark:$(IMAGE_TAG),
#                               the spark-operator's filedrop-spark-operator:2.5.2 and Argo's filedrop-argo:3.7.18
#                               as OCI archives in ~/.cache/filedrop/images (only what changed is rebuilt)
#   make images-clean           remove the buildah storage, the archives and result.json

IMAGE_TAG ?= dev

IMAGE_DEBS := mmdebstrap buildah uidmap runc

.PHONY: images images-clean image-deps

# Debian's daemonless builder and the base-image maker (make test builds the filedrop image too)
image-deps:
	@missing=""; for p in $(IMAGE_DEBS); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
		echo "installing Debian's$$missing"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
	fi

images: image-deps
	@$(PYTHON) -m tools.images build --tag "$(IMAGE_TAG)"

images-clean:
	@$(PYTHON) -m tools.images clean
