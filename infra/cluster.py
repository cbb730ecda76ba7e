"""The Kubernetes provider every object of a stack is created with.

Explicit, and configured from the stack's own config: a resource left to
Pulumi's default provider goes to whichever context kubectl has current
when `pulumi up` runs, so switching contexts in another terminal would
point prod's program at another cluster.
"""

from __future__ import annotations

import pulumi
import pulumi_kubernetes as k8s

from infra.settings import ClusterSettings


def provider_args(cluster: ClusterSettings) -> k8s.ProviderArgs:
    # Unset stays None: the provider then reads KUBECONFIG / the current
    # context, which settings allow only on an unprotected stack.
    return k8s.ProviderArgs(context=cluster.kube_context, kubeconfig=cluster.kubeconfig)


def provider(cluster: ClusterSettings) -> k8s.Provider:
    return k8s.Provider("cluster", provider_args(cluster))


def on(cluster_provider: k8s.Provider, opts: pulumi.ResourceOptions | None = None) -> pulumi.ResourceOptions:
    """`opts` with the provider, which components hand down to their children."""
    return pulumi.ResourceOptions.merge(opts or pulumi.ResourceOptions(), pulumi.ResourceOptions(providers=[cluster_provider]))
