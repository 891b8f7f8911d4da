"""The S3 run store (MinIO, SeaweedFS, Ceph RGW, AWS S3): the only package that imports ``minio``.

Modules, lowest first: :mod:`.errors` (the error classes), :mod:`.config` (``S3Config``, the
profile file, endpoint and ``s3://`` URL parsing), :mod:`.retry` (``RetryPolicy``, classifying
failures, error messages), :mod:`.stats` (transfer counters), :mod:`.wire` (the lean signed GETs
used for bulk reads), :mod:`.transport` (the minio client and its connection pool, TLS),
:mod:`.cache` (the local SQLite ETag cache), :mod:`.listing` (ListObjectsV2 pages, tree walks,
remembered listings), :mod:`.reads` (planning and running bulk reads) and :mod:`.store`
(:class:`~expkit.stores.s3.store.S3Store`, which also re-exports the public names of the others).
"""
