"""What was built: the version (the package's) and the source revision.

``REVISION`` is ``unknown`` in a source checkout; the Dockerfile rewrites this line with its
``REVISION`` build argument before installing the package, so an image reports the commit it
was built from in ``pass_status_build_info{revision}``.
"""

REVISION = "unknown"
