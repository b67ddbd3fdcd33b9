// The node's own tiny images, static Go programs packed as one-layer OCI images by
// tools/k8s/oci.py (build.sh): pause (the pod sandbox) and probe (a test workload).
module filedrop.local/tools/k8s/nodeimages

go 1.26.0
