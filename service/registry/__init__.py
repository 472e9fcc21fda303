"""Patch registry: signed, content-addressed patch versions and compare-and-set stacks in Redis
(``store.Registry``; key names in ``keys``, records in ``models``, signing in ``signing``)."""
