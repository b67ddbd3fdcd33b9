"""Kubernetes API access for the operator, the bridge and backfill. Adapter layer.

The only module (with ``handlers``) that imports the ``kubernetes`` client. In a pod it uses the
ServiceAccount's token; elsewhere ``KUBECONFIG``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from kubernetes import client, config
from kubernetes.client.exceptions import ApiException

from filedrop.cluster.resources import FILEDROPS, FILEROUTES, GROUP, VERSION, route_from_object
from filedrop.routes import FileRoute, RouteError

log = logging.getLogger(__name__)
SPARK = ("sparkoperator.k8s.io", "v1beta2")


def _loose(fn: Callable[..., object]) -> Callable[..., Any]:
    """A client function called with what it takes at run time (plain dicts for models), or one the
    ``kubernetes`` package leaves untyped."""
    return fn


def _object(value: object) -> dict[str, Any]:
    """An API answer the client returns as a parsed JSON object (typed ``object`` by the client)."""
    if not isinstance(value, dict):
        raise TypeError(f"expected a JSON object from the API server, got {type(value).__name__}")
    return value


class Kube:
    def __init__(self, api_client: client.ApiClient | None = None) -> None:
        if api_client is None:
            try:
                _loose(config.load_incluster_config)()
            except config.ConfigException:
                _loose(config.load_kube_config)()
            api_client = client.ApiClient()
        self.api = api_client
        self.custom = client.CustomObjectsApi(api_client)
        self.batch = client.BatchV1Api(api_client)
        self.core = client.CoreV1Api(api_client)
        self.extensions = client.ApiextensionsV1Api(api_client)

    # --- CustomResourceDefinitions (the chart's upgrade hook) -----------------------------------------
    def get_crd(self, name: str) -> dict[str, Any] | None:
        try:
            return _object(_loose(self.api.sanitize_for_serialization)(
                self.extensions.read_custom_resource_definition(name)))
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise

    def replace_crd(self, name: str, body: dict[str, Any]) -> dict[str, Any]:
        """PUT the whole CRD (``body`` carries the resourceVersion it replaces)."""
        return _object(_loose(self.api.sanitize_for_serialization)(
            _loose(self.extensions.replace_custom_resource_definition)(name, body)))

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
        return list(_object(res).get("items", []))

    def patch_filedrop_status(self, namespace: str, name: str, status: dict[str, Any]) -> dict[str, Any]:
        """Merge ``status`` into the FileDrop's status (None removes a field); the object as it now is."""
        return _object(self.custom.patch_namespaced_custom_object_status(
            GROUP, VERSION, namespace, FILEDROPS, name, {"status": status}))

    # --- FileRoutes ---------------------------------------------------------------------------------
    def list_routes(self, namespace: str) -> list[dict[str, Any]]:
        res = self.custom.list_namespaced_custom_object(GROUP, VERSION, namespace, FILEROUTES)
        return list(_object(res).get("items", []))

    def routes(self, namespace: str) -> tuple[list[FileRoute], list[str]]:
        """The namespace's FileRoutes as validated models, and the errors of those that do not validate."""
        routes: list[FileRoute] = []
        errors: list[str] = []
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
        return _object(_loose(self.api.sanitize_for_serialization)(job))

    def create_job(self, namespace: str, body: dict[str, Any]) -> bool:
        try:
            _loose(self.batch.create_namespaced_job)(namespace, body)
            return True
        except ApiException as exc:
            if exc.status == 409:  # created by an earlier try of this same step: not a twin
                return False
            raise

    def get_spark_application(self, namespace: str, name: str) -> dict[str, Any] | None:
        try:
            return _object(self.custom.get_namespaced_custom_object(*SPARK, namespace, "sparkapplications", name))
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise

    def create_spark_application(self, namespace: str, body: dict[str, Any]) -> bool:
        try:
            self.custom.create_namespaced_custom_object(*SPARK, namespace, "sparkapplications", body)
            return True
        except ApiException as exc:
            if exc.status == 409:
                return False
            raise
