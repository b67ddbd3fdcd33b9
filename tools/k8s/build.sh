#!/usr/bin/env bash
# Build the pinned Kubernetes test tools from Go modules.
#
#   build.sh            the control plane:
#     kube-apiserver, kube-controller-manager, kubectl  (tools/k8s/kubernetes/go.mod)
#     etcd                                              (tools/k8s/etcd/go.mod)
#     helm                                              (tools/k8s/helm/go.mod)
#   into ${XDG_CACHE_HOME:-$HOME/.cache}/filedrop/k8s-<k8s>-etcd<etcd>-helm<helm>/bin;
#
#   build.sh node       the node (tools/k8s/node.py), each only if it is missing:
#     kubelet, kube-proxy, kube-scheduler               (tools/k8s/kubernetes/go.mod)
#     containerd, containerd-shim-runc-v2, ctr          (tools/k8s/containerd/go.mod)
#     coredns                                           (tools/k8s/coredns/go.mod)
#     images/pause.tar, images/probe.tar                (tools/k8s/nodeimages, packed by tools/k8s/oci.py)
#   into ${XDG_CACHE_HOME:-$HOME/.cache}/filedrop/k8s-node-<k8s>-containerd<v>-coredns<v>/bin;
#
#   build.sh spark-operator   the Kubeflow spark-operator's controller (tools/k8s/spark-operator/go.mod)
#   into ${XDG_CACHE_HOME:-$HOME/.cache}/filedrop/spark-operator-<v>/bin/spark-operator.
#
#   build.sh argo-workflows   Argo Workflows' workflow-controller, argoexec and argo (CLI and server, with
#   the UI that tools/k8s/argo-ui/build.sh builds embedded) from tools/k8s/argo-workflows/go.mod
#   into ${XDG_CACHE_HOME:-$HOME/.cache}/filedrop/argo-workflows-<v>/bin.
#
# Idempotent: when that directory is complete it exits at once. Whatever it does,
# the last line on stdout is the bin directory; progress goes to stderr.
# Go's module and build caches are the user's ordinary ones (go env GOMODCACHE/GOCACHE).
# A cold build takes a long time on 2 cores (see tools/k8s/README.md).
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)

# The versions are read from the wrapper modules, the single place they are pinned.
pinned() { sed -n "s|^require $2 \(v[^ ]*\).*|\1|p" "$here/$1/go.mod"; }
k8s_version=$(pinned kubernetes k8s.io/kubernetes)
etcd_version=$(pinned etcd go.etcd.io/etcd/server/v3)
helm_version=$(pinned helm helm.sh/helm/v3)
helm_k8s_version=$(sed -n 's|^\tk8s.io/client-go \(v[^ ]*\).*|\1|p' "$here/helm/go.mod")
for v in "$k8s_version" "$etcd_version" "$helm_version" "$helm_k8s_version"; do
  [[ $v =~ ^v[0-9]+\.[0-9]+\.[0-9]+$ ]] || { echo "build.sh: cannot read pinned versions from $here/*/go.mod" >&2; exit 2; }
done

# kube-*, kubectl: stamp the release the way hack/lib/version.sh does, so `kubectl version`
# and /version tell the truth.
minor=${k8s_version#v1.}
minor=${minor%%.*}
k8s_ldflags="-s -w"
for pkg in k8s.io/client-go/pkg/version k8s.io/component-base/version; do
  k8s_ldflags+=" -X $pkg.gitVersion=$k8s_version -X $pkg.gitMajor=1 -X $pkg.gitMinor=$minor"
  k8s_ldflags+=" -X $pkg.gitTreeState=clean -X $pkg.gitCommit= -X $pkg.buildDate=$(date -u +%Y-%m-%dT%H:%M:%SZ)"
done

# ---------------------------------------------------------------- build.sh spark-operator
if [[ ${1:-} == spark-operator ]]; then
  sparkop_version=$(sed -n 's|^\tgithub.com/kubeflow/spark-operator/v2 \(v[^ ]*\).*|\1|p' "$here/spark-operator/go.mod")
  [[ $sparkop_version =~ ^v[0-9]+\.[0-9]+\.[0-9]+$ ]] || { echo "build.sh: cannot read the spark-operator version" >&2; exit 2; }
  root=${XDG_CACHE_HOME:-$HOME/.cache}/filedrop/spark-operator-${sparkop_version#v}
  bin=$root/bin
  # rebuilt when the wrapper module changes (the same release with other dependencies), not only the version
  so_key=$(cat "$here/spark-operator/go.mod" "$here/spark-operator/go.sum" | sha256sum | cut -d' ' -f1)
  built() { [[ -x $bin/spark-operator && $(cat "$bin/.key" 2>/dev/null) == "$so_key" ]]; }
  if built; then
    echo "$bin"
    exit 0
  fi
  mkdir -p "$root"
  exec 9>"$root/.lock"
  flock 9
  if ! built; then
    command -v go >/dev/null || { echo "build.sh: go is not installed" >&2; exit 2; }
    export GOTOOLCHAIN=local GOFLAGS="-mod=readonly -buildvcs=false"
    start=$SECONDS
    echo "build.sh: spark-operator $sparkop_version (first time: several minutes) ..." >&2
    # upstream's Makefile stamps the release into component-base's version and links statically
    so_ldflags="-s -w -X k8s.io/component-base/version.gitVersion=$sparkop_version"
    so_ldflags+=" -X k8s.io/component-base/version.gitTreeState=clean"
    # the release's commit, as the module proxy records it (go mod download fills the cache first)
    so_info=$(cd "$here/spark-operator" && go mod download -json github.com/kubeflow/spark-operator/v2 | sed -n 's|.*"Info": "\(.*\)",|\1|p')
    so_commit=$(sed -n 's|.*"Hash":"\([0-9a-f]*\)".*|\1|p' "$so_info" 2>/dev/null || true)
    [[ -z $so_commit ]] || so_ldflags+=" -X k8s.io/component-base/version.gitCommit=$so_commit"
    so_ldflags+=" -X k8s.io/component-base/version.buildDate=$(date -u +%Y-%m-%dT%H:%M:%SZ)"
    mkdir -p "$root/stage"
    (cd "$here/spark-operator" && CGO_ENABLED=0 go build -trimpath -ldflags "$so_ldflags" \
      -o "$root/stage/spark-operator" github.com/kubeflow/spark-operator/v2/cmd/operator) >&2
    mkdir -p "$bin"
    mv "$root/stage/spark-operator" "$bin/spark-operator"
    echo "$so_key" >"$bin/.key"
    rm -rf "$root/stage"
    echo "build.sh: spark-operator done in $((SECONDS - start))s" >&2
  fi
  echo "$bin"
  exit 0
fi

# ---------------------------------------------------------------- build.sh argo-workflows
if [[ ${1:-} == argo-workflows ]]; then
  argo_module=github.com/argoproj/argo-workflows/v3
  argo_version=$(sed -n "s|^\t$argo_module \(v[^ ]*\).*|\1|p" "$here/argo-workflows/go.mod")
  [[ $argo_version =~ ^v[0-9]+\.[0-9]+\.[0-9]+$ ]] || { echo "build.sh: cannot read the Argo Workflows version" >&2; exit 2; }
  root=${XDG_CACHE_HOME:-$HOME/.cache}/filedrop/argo-workflows-${argo_version#v}
  bin=$root/bin
  # rebuilt when the wrapper module, the UI's recipe, this script or the Go or Node toolchain changes
  argo_key=$( (cat "$here/argo-workflows/go.mod" "$here/argo-workflows/go.sum" "$here"/argo-ui/* "$here/build.sh"
              go version 2>&1; node --version 2>&1) | sha256sum | cut -d' ' -f1)
  built() {
    [[ $(cat "$bin/.key" 2>/dev/null) == "$argo_key" ]] || return 1
    local t
    for t in workflow-controller argoexec argo; do [[ -x $bin/$t ]] || return 1; done
  }
  if built; then
    echo "$bin"
    exit 0
  fi
  mkdir -p "$root"
  exec 9>"$root/.lock"
  flock 9
  if ! built; then
    command -v go >/dev/null || { echo "build.sh: go is not installed" >&2; exit 2; }
    export GOTOOLCHAIN=local GOFLAGS="-mod=readonly -buildvcs=false"
    start=$SECONDS
    echo "build.sh: Argo Workflows $argo_version (first time: many minutes) ..." >&2
    argo_json=$(cd "$here/argo-workflows" && go mod download -json "$argo_module") ||
      { echo "build.sh: go mod download $argo_module failed: $argo_json" >&2; exit 1; }
    argo_dir=$(sed -n 's|.*"Dir": "\(.*\)",|\1|p' <<<"$argo_json")
    argo_info=$(sed -n 's|.*"Info": "\(.*\)",|\1|p' <<<"$argo_json")
    argo_commit=$(sed -n 's|.*"Hash":"\([0-9a-f]*\)".*|\1|p' "$argo_info" 2>/dev/null || true)
    [[ -d $argo_dir ]] || { echo "build.sh: go mod download gave no directory for $argo_module" >&2; exit 1; }
    # upstream's Makefile stamps these into `argo version` and the controller's default executor image
    argo_ldflags="-s -w"
    for kv in "version=$argo_version" "gitTag=$argo_version" "gitCommit=$argo_commit" "gitTreeState=clean" \
              "buildDate=$(date -u +%Y-%m-%dT%H:%M:%SZ)"; do
      argo_ldflags+=" -X $argo_module.$kv"
    done
    stage=$root/stage
    rm -rf "$stage"
    mkdir -p "$stage"
    # Built in a writable copy of the module, with its own go.mod and go.sum (upstream's; the wrapper pins the
    # same versions, and its go.sum checks the module itself), which gets what the
    # module zip leaves out: the symlink signal_linux.go -> signal_darwin.go (zips carry no symlinks;
    # without it argoexec does not compile for Linux) and the UI that `argo` embeds (ui/dist/app, go:embed)
    cp -r "$argo_dir" "$stage/src"
    chmod -R u+w "$stage/src"
    osspecific=$stage/src/workflow/executor/osspecific
    [[ -e $osspecific/signal_linux.go ]] || ln -s signal_darwin.go "$osspecific/signal_linux.go"
    echo "build.sh: the Argo UI ..." >&2
    bash "$here/argo-ui/build.sh" "$stage/src" >&2
    echo "build.sh: workflow-controller argoexec argo ..." >&2
    (cd "$stage/src" && CGO_ENABLED=0 go build -trimpath -ldflags "$argo_ldflags" -o "$stage/" \
      ./cmd/workflow-controller ./cmd/argoexec ./cmd/argo) >&2
    env -u ARGO_SERVER "$stage/argo" version --short >&2
    mkdir -p "$bin"
    rm -f "$bin/.key"  # an interrupted move leaves no key: the next run rebuilds
    for t in workflow-controller argoexec argo; do mv "$stage/$t" "$bin/$t"; done
    # the runtime files upstream's images carry next to the binaries
    install -m 0644 "$argo_dir/hack/nsswitch.conf" "$bin/nsswitch.conf"
    echo "$argo_key" >"$bin/.key"
    rm -rf "$stage"
    echo "build.sh: Argo Workflows done in $((SECONDS - start))s" >&2
  fi
  echo "$bin"
  exit 0
fi

# ---------------------------------------------------------------- the node: build.sh node
if [[ ${1:-} == node ]]; then
  containerd_version=$(pinned containerd github.com/containerd/containerd/v2)
  coredns_version=$(pinned coredns github.com/coredns/coredns)
  for v in "$containerd_version" "$coredns_version"; do
    [[ $v =~ ^v[0-9]+\.[0-9]+\.[0-9]+$ ]] || { echo "build.sh: cannot read pinned versions from $here/*/go.mod" >&2; exit 2; }
  done
  root=${XDG_CACHE_HOME:-$HOME/.cache}/filedrop/k8s-node-${k8s_version#v}-containerd${containerd_version#v}-coredns${coredns_version#v}
  bin=$root/bin
  node_tools=(kubelet kube-proxy kube-scheduler containerd containerd-shim-runc-v2 ctr coredns images/pause.tar images/probe.tar)
  missing() {
    local t out=()
    for t in "${node_tools[@]}"; do [[ -s $bin/$t ]] || out+=("$t"); done
    echo "${out[*]}"
  }
  if [[ -f $bin/.complete && -z $(missing) ]]; then
    echo "$bin"
    exit 0
  fi
  mkdir -p "$bin/images"
  exec 9>"$root/.lock"
  flock 9
  command -v go >/dev/null || { echo "build.sh: go is not installed" >&2; exit 2; }
  export GOTOOLCHAIN=local GOFLAGS="-mod=readonly -buildvcs=false"
  start=$SECONDS
  todo=" $(missing) "
  want() { [[ $todo == *" $1 "* ]]; }
  stage=$root/stage
  rm -rf "$stage"
  mkdir -p "$stage"
  # Each tool lands in bin only when built: an interrupted build redoes only what is missing.
  publish() { local f; for f in "$@"; do mv "$stage/${f##*/}" "$bin/$f"; done; }
  echo "build.sh: node tools missing in $bin:$todo" >&2
  if want images/pause.tar || want images/probe.tar; then
    echo "build.sh: pause and probe images ..." >&2
    (cd "$here/nodeimages" && CGO_ENABLED=0 go build -trimpath -ldflags "-s -w" -o "$stage/" ./pause ./probe) >&2
    for img in pause probe; do
      (cd "$here/../.." && "${PYTHON:-python3}" -m tools.k8s.oci --binary "$stage/$img" \
        --ref "docker.io/library/filedrop-$img:1" --out "$stage/$img.tar") >/dev/null
      publish "images/$img.tar"
    done
  fi
  if want kubelet || want kube-proxy || want kube-scheduler; then
    echo "build.sh: kubelet kube-proxy kube-scheduler ..." >&2
    (cd "$here/kubernetes" && go build -trimpath -ldflags "$k8s_ldflags" -o "$stage/" \
      k8s.io/kubernetes/cmd/kubelet k8s.io/kubernetes/cmd/kube-proxy k8s.io/kubernetes/cmd/kube-scheduler) >&2
    publish kubelet kube-proxy kube-scheduler
  fi
  if want containerd || want containerd-shim-runc-v2 || want ctr; then
    echo "build.sh: containerd $containerd_version ..." >&2
    ctd_ldflags="-s -w -X github.com/containerd/containerd/v2/version.Version=$containerd_version"
    ctd_ldflags+=" -X github.com/containerd/containerd/v2/version.Package=github.com/containerd/containerd/v2"
    ctd_tags="no_btrfs no_devmapper no_zfs"
    (cd "$here/containerd" && go build -trimpath -tags "$ctd_tags" -ldflags "$ctd_ldflags" -o "$stage/" \
      github.com/containerd/containerd/v2/cmd/containerd github.com/containerd/containerd/v2/cmd/ctr &&
      CGO_ENABLED=0 go build -trimpath -tags "$ctd_tags" -ldflags "$ctd_ldflags" -o "$stage/" \
      github.com/containerd/containerd/v2/cmd/containerd-shim-runc-v2) >&2
    publish containerd ctr containerd-shim-runc-v2
  fi
  if want coredns; then
    echo "build.sh: coredns $coredns_version ..." >&2
    (cd "$here/coredns" && CGO_ENABLED=0 go build -trimpath -ldflags \
      "-s -w -X github.com/coredns/coredns/coremain.GitCommit=$coredns_version" -o "$stage/coredns" .) >&2
    publish coredns
  fi
  rm -rf "$stage"
  [[ -z $(missing) ]] || { echo "build.sh: still missing in $bin: $(missing)" >&2; exit 1; }
  printf 'kubernetes %s\ncontainerd %s\ncoredns %s\n' "$k8s_version" "$containerd_version" "$coredns_version" >"$bin/VERSIONS"
  touch "$bin/.complete"
  echo "build.sh: node tools done in $((SECONDS - start))s" >&2
  echo "$bin"
  exit 0
fi

root=${XDG_CACHE_HOME:-$HOME/.cache}/filedrop/k8s-${k8s_version#v}-etcd${etcd_version#v}-helm${helm_version#v}
bin=$root/bin
tools=(etcd kube-apiserver kube-controller-manager kubectl helm)

complete() {
  [[ -f $bin/.complete ]] || return 1
  local t
  for t in "${tools[@]}"; do [[ -x $bin/$t ]] || return 1; done
}

if complete; then
  echo "$bin"
  exit 0
fi

mkdir -p "$root"
# One build at a time per machine (make and pytest may both ask).
exec 9>"$root/.lock"
flock 9
if complete; then
  echo "$bin"
  exit 0
fi

command -v go >/dev/null || { echo "build.sh: go is not installed" >&2; exit 2; }
# The wrapper modules' go.mod and go.sum are complete (go mod tidy): -mod=readonly builds exactly
# them and never rewrites them; GOTOOLCHAIN=local never downloads another Go.
export GOTOOLCHAIN=local GOFLAGS="-mod=readonly -buildvcs=false"
stage=$root/bin.partial
rm -rf "$stage"
mkdir -p "$stage"
start=$SECONDS
echo "build.sh: building Kubernetes $k8s_version, etcd $etcd_version, helm $helm_version into $bin (first time: many minutes)" >&2

echo "build.sh: kube-apiserver kube-controller-manager kubectl ..." >&2
(cd "$here/kubernetes" && go build -trimpath -ldflags "$k8s_ldflags" -o "$stage/" \
  k8s.io/kubernetes/cmd/kube-apiserver \
  k8s.io/kubernetes/cmd/kube-controller-manager \
  k8s.io/kubernetes/cmd/kubectl) >&2

echo "build.sh: etcd ..." >&2
(cd "$here/etcd" && go build -trimpath -ldflags "-s -w" -o "$stage/etcd" go.etcd.io/etcd/server/v3) >&2

echo "build.sh: helm ..." >&2
helm_minor=${helm_k8s_version#v0.}
helm_minor=${helm_minor%%.*}
helm_ldflags="-s -w -X helm.sh/helm/v3/internal/version.version=$helm_version"
helm_ldflags+=" -X helm.sh/helm/v3/internal/version.gitTreeState=clean"
for pkg in helm.sh/helm/v3/pkg/lint/rules helm.sh/helm/v3/pkg/chartutil; do
  helm_ldflags+=" -X $pkg.k8sVersionMajor=1 -X $pkg.k8sVersionMinor=$helm_minor"
done
(cd "$here/helm" && go build -trimpath -ldflags "$helm_ldflags" -o "$stage/helm" helm.sh/helm/v3/cmd/helm) >&2

printf 'kubernetes %s\netcd %s\nhelm %s\n' "$k8s_version" "$etcd_version" "$helm_version" >"$stage/VERSIONS"
touch "$stage/.complete"
rm -rf "$bin"
mv "$stage" "$bin"
echo "build.sh: done in $((SECONDS - start))s" >&2
echo "$bin"
