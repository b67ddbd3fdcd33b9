"""The control plane's certificates (a private CA, the API server's serving certificate, client certificates,
the front proxy's CA, the service-account signing key), made with the `openssl` command, and kubeconfigs."""

from __future__ import annotations

import base64
import json
import subprocess
from pathlib import Path

from tools.k8s.base import ControlPlaneError


def _openssl(*args: str, cwd: Path) -> None:
    proc = subprocess.run(["openssl", *args], cwd=cwd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise ControlPlaneError(f"openssl {' '.join(args)} failed:\n{proc.stderr}")


def _cert(pki: Path, name: str, subject: dict[str, str], ext: list[str], ca: bool = False,
          issuer: str = "ca") -> None:
    """Write pki/NAME.crt and pki/NAME.key (P-256), signed by pki/ISSUER unless self-signed (ca=True)."""
    dn = "\n".join(f"{k} = {v}" for k, v in subject.items())
    cnf = pki / f"{name}.cnf"
    cnf.write_text(
        "[req]\ndistinguished_name = dn\nprompt = no\n"
        f"[dn]\n{dn}\n[ext]\n" + "\n".join(ext) + "\n"
    )
    args = [
        "req", "-x509", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
        "-nodes", "-keyout", f"{name}.key", "-out", f"{name}.crt", "-days", "3650",
        "-config", cnf.name, "-extensions", "ext",
    ]
    if not ca:
        args += ["-CA", f"{issuer}.crt", "-CAkey", f"{issuer}.key"]
    _openssl(*args, cwd=pki)
    cnf.unlink()


LEAF = ["basicConstraints = critical,CA:FALSE", "keyUsage = critical,digitalSignature,keyEncipherment"]


def _apiserver_cert(pki: Path, service_ip: str, extra_ips: tuple[str, ...]) -> None:
    sans = ",".join(["DNS:localhost", "DNS:kubernetes", "DNS:kubernetes.default",
                     "DNS:kubernetes.default.svc", "DNS:kubernetes.default.svc.cluster.local",
                     "IP:127.0.0.1", f"IP:{service_ip}", *(f"IP:{ip}" for ip in extra_ips)])
    _cert(pki, "apiserver", {"CN": "kube-apiserver"},
          LEAF + ["extendedKeyUsage = serverAuth", f"subjectAltName = {sans}"])


def make_pki(pki: Path, service_ip: str) -> None:
    """pki/: the CA and the certificates and keys signed by it; once (pki/done marks it made)."""
    if (pki / "done").exists():
        return
    pki.mkdir(parents=True, exist_ok=True)
    _cert(pki, "ca", {"CN": "filedrop-test-ca"},
          ["basicConstraints = critical,CA:TRUE",
           "keyUsage = critical,keyCertSign,cRLSign,digitalSignature",
           "subjectKeyIdentifier = hash"], ca=True)
    _apiserver_cert(pki, service_ip, ())
    client = LEAF + ["extendedKeyUsage = clientAuth"]
    _cert(pki, "admin", {"O": "system:masters", "CN": "filedrop-admin"}, client)
    _cert(pki, "controller-manager", {"CN": "system:kube-controller-manager"}, client)
    # The aggregation layer's front proxy: its own CA and the client certificate the
    # API server presents to extension API servers (as kubeadm sets it up).
    _cert(pki, "front-proxy-ca", {"CN": "filedrop-test-front-proxy-ca"},
          ["basicConstraints = critical,CA:TRUE", "keyUsage = critical,keyCertSign,cRLSign,digitalSignature",
           "subjectKeyIdentifier = hash"], ca=True)
    _cert(pki, "front-proxy-client", {"CN": "front-proxy-client"}, client, issuer="front-proxy-ca")
    # The service-account token signing key pair.
    _openssl("genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256", "-out", "sa.key", cwd=pki)
    _openssl("pkey", "-in", "sa.key", "-pubout", "-out", "sa.pub", cwd=pki)
    for key in pki.glob("*.key"):
        key.chmod(0o600)
    (pki / "done").write_text("")


def make_node_pki(pki: Path, service_ip: str, node_name: str, node_ip: str) -> None:
    """The node's certificates, beside make_pki's; once (pki/node-done names the node and its address).

    The API server's serving certificate is reissued with node_ip (the bridge address it binds
    to); the node's components get client certificates whose names the default RBAC bindings
    (and the Node authorizer) know; the kubelet a serving certificate for node_ip; the API
    server a client certificate for the kubelets (`kubectl logs/exec`).
    """
    marker = pki / "node-done"
    if marker.exists() and marker.read_text() == f"{node_name} {node_ip}\n":
        return
    _apiserver_cert(pki, service_ip, (node_ip,))
    client = LEAF + ["extendedKeyUsage = clientAuth"]
    _cert(pki, "kubelet", {"O": "system:nodes", "CN": f"system:node:{node_name}"}, client)
    _cert(pki, "kubelet-serving", {"CN": node_name},
          LEAF + ["extendedKeyUsage = serverAuth", f"subjectAltName = DNS:{node_name},IP:{node_ip}"])
    _cert(pki, "kube-scheduler", {"CN": "system:kube-scheduler"}, client)
    _cert(pki, "kube-proxy", {"CN": "system:kube-proxy"}, client)
    _cert(pki, "coredns", {"CN": "filedrop:coredns"}, client)
    # system:masters, as kubeadm's apiserver-kubelet-client was: the kubelet's webhook
    # authorizer asks the API server, which lets it proxy logs, exec and metrics.
    _cert(pki, "apiserver-kubelet-client", {"O": "system:masters", "CN": "kube-apiserver-kubelet-client"}, client)
    for key in pki.glob("*.key"):
        key.chmod(0o600)
    marker.write_text(f"{node_name} {node_ip}\n")


def kubeconfig_text(server: str, pki: Path, user: str) -> str:
    def b64(name: str) -> str:
        return base64.b64encode((pki / name).read_bytes()).decode()

    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "filedrop-test", "cluster": {
            "server": server, "certificate-authority-data": b64("ca.crt")}}],
        "users": [{"name": user, "user": {
            "client-certificate-data": b64(f"{user}.crt"),
            "client-key-data": b64(f"{user}.key")}}],
        "contexts": [{"name": "filedrop-test", "context": {"cluster": "filedrop-test", "user": user}}],
        "current-context": "filedrop-test",
    }
    return json.dumps(config, indent=2) + "\n"  # JSON is YAML
