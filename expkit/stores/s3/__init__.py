"""The S3 run store (MinIO, SeaweedFS, Ceph RGW, AWS S3): the only package that imports ``minio``.

:mod:`.store` has :class:`~expkit.stores.s3.store.S3Store` and its configuration; :mod:`.wire` the
lean signed GETs used for bulk reads.
"""
