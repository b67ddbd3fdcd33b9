// Pins the Prometheus Operator whose CRDs (ServiceMonitor, PrometheusRule) the chart tests install, read
// from Go's module cache (tools/k8s/base.py module_dir), never copied into the repository.
module filedrop.dev/tools/prometheus-operator

go 1.24

require github.com/prometheus-operator/prometheus-operator v0.90.1
