"""Upstream adapters: wire codecs for OIP v2 / KServe v1 / generic JSON (``codecs``), and the
pooled, retried, circuit-broken ``client.UpstreamClient`` that the gateway and the trainer
share."""
