"""Services: the plugin's behaviour, between ``rest/`` (HTTP) and ``models/`` (documents).

- :mod:`.resolution`: which sites hold an identifier's dataset, ranked with their health;
- :mod:`.registration`: a site's claim to the federation and the set of datasets it holds;
- :mod:`.notebooks`: a notebook's lifecycle, from launch to stop, here or at another site.

Services raise :mod:`girder_resolver.errors`; ``rest/`` maps them to HTTP statuses.
"""
