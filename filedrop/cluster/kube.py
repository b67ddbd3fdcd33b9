"""Kubernetes API access for the operator, the bridge and backfill. Adapter layer.

The only module (with ``handlers``) that imports the ``kubernetes`` client. In a pod it uses the
ServiceAccount's token; elsewhere ``KUBECONFIG``.
"""

from __future__ import annotations

import logging
from typing import Any

from kubernetes import client, config
from kubernetes.client.exceptions import ApiException

from filedrop.cluster.resources import FILEDROPS, FILEROUTES, GROUP, VERSION, route_from_object
from filedrop.routes import FileRoute, RouteError

log = logging.getLogger(__name__)


class Kube:
    def __init__(self, api_client: client.ApiClient | None = None) -> None:
        if api_client is None:
            try:
                config.load_incluster_config()
            except config.ConfigException:
                config.load_kube_config()
            api_client = client.ApiClient()
        self.api = api_client
        self.custom = client.CustomObjectsApi(api_client)
        self.batch = client.BatchV1Api(api_client)
        self.core = client.CoreV1Api(api_client)

    # --- FileDrops ----------------------------------------------------------------------------------
    def create_filedrop(self, namespace: str, body: dict[str, Any]) -> bool:
        """Create a FileDrop; False when it already exists (its name is deterministic: that is success)."""
        try:
            self.custom.create_namespaced_custom_object(GROUP, VERSION, namespace, FILEDROPS, body)
            return True
        except ApiException as exc:
            if exc.status == 409:
                return False
            raise

    def list_filedrops(self, namespace: str | None = None) -> list[dict[str, Any]]:
        if namespace:
            res = self.custom.list_namespaced_custom_object(GROUP, VERSION, namespace, FILEDROPS)
        else:
            res = self.custom.list_cluster_custom_object(GROUP, VERSION, FILEDROPS)
        return list(res.get("items", []))

    def patch_filedrop_status(self, namespace: str, name: str, status: dict[str, Any]) -> None:
        self.custom.patch_namespaced_custom_object_status(
            GROUP, VERSION, namespace, FILEDROPS, name, {"status": status})

    # --- FileRoutes ---------------------------------------------------------------------------------
    def list_routes(self, namespace: str) -> list[dict[str, Any]]:
        res = self.custom.list_namespaced_custom_object(GROUP, VERSION, namespace, FILEROUTES)
        return list(res.get("items", []))

    def routes(self, namespace: str) -> tuple[list[FileRoute], list[str]]:
        """The namespace's FileRoutes as validated models, and the errors of those that do not validate."""
        routes, errors = [], []
        for obj in self.list_routes(namespace):
            try:
                routes.append(route_from_object(obj))
            except RouteError as exc:
                errors.append(str(exc))
        return routes, errors

    def patch_route_status(self, namespace: str, name: str, status: dict[str, Any]) -> None:
        try:
            self.custom.patch_namespaced_custom_object_status(
                GROUP, VERSION, namespace, FILEROUTES, name, {"status": status})
        except ApiException as exc:
            if exc.status != 404:
                raise

    # --- load jobs ----------------------------------------------------------------------------------
    def get_job(self, namespace: str, name: str) -> dict[str, Any] | None:
        try:
            job = self.batch.read_namespaced_job(name, namespace)
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise
        return dict(self.api.sanitize_for_serialization(job))

    def create_job(self, namespace: str, body: dict[str, Any]) -> bool:
        try:
            self.batch.create_namespaced_job(namespace, body)
            return True
        except ApiException as exc:
            if exc.status == 409:  # created by an earlier try of this same step: not a twin
                return False
            raise

    def get_spark_application(self, namespace: str, name: str) -> dict[str, Any] | None:
        try:
            return dict(self.custom.get_namespaced_custom_object(
                "sparkoperator.k8s.io", "v1beta2", namespace, "sparkapplications", name))
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise

    def create_spark_application(self, namespace: str, body: dict[str, Any]) -> bool:
        try:
            self.custom.create_namespaced_custom_object(
                "sparkoperator.k8s.io", "v1beta2", namespace, "sparkapplications", body)
            return True
        except ApiException as exc:
            if exc.status == 409:
                return False
            raise
