"""moto_server whose S3 conditional writes are atomic, as Amazon S3's are.

moto 5.2.5 checks `If-None-Match: *` / `If-Match` and then stores the object as
two steps on a threaded server, so two concurrent create-only PUTs of one key
can both succeed (measured: 9 of 3,000 keys raced by four writers got two
winners). The vault's replicas rely on S3's guarantee that exactly one wins
(audit segments, idempotency records, tenant records, leases); against plain
moto a lost race went unnoticed now and then and forked a tenant's audit log in
the tests. Here each object-level handler that checks a condition or changes an
object runs under one lock, after moto has read the request body, so a slow
client never holds it.

Listing is indexed, as S3's is: moto 5.2.5 walks and sorts every key of the
bucket for each page of ListObjectsV2 (3-6 s per 1,000-key page at 340,000
objects), which made a replica's start-up at 100,000 documents measure moto
rather than the vault. Here each bucket keeps its key names sorted, updated as
keys are stored and removed, and a page is found by bisection (ListObjectVersions,
which moto answers by deep-copying every version in the bucket, looks only at the
prefix's range). Listings also
run under the lock: moto's walked keys that a concurrent delete removed and
answered 500 (KeyError). Nothing else about moto changes.

Run it like moto_server: `python moto_atomic.py -H 127.0.0.1 -p 5000`.
"""

import bisect
import functools
import threading

from moto.s3 import models as s3_models
from moto.s3 import utils as s3_utils
from moto.s3.models import FakeDeleteMarker, S3Backend
from moto.s3.responses import S3Response
from moto.server import main
from moto.utilities.utils import md5_hash

_OBJECTS = threading.RLock()


def _atomic(handler):
    @functools.wraps(handler)
    def locked(self, *args, **kwargs):
        with _OBJECTS:
            return handler(self, *args, **kwargs)

    return locked


# Writes check their condition and store under the lock; reads take it too, so
# that no reader sees an object between its storing and its metadata (moto sets
# user metadata after the key is visible).
for _name in (
    "put_object",
    "copy_object",
    "delete_object",
    "_key_response_post",
    "get_object",
    "head_object",
    "_bucket_response_delete_keys",
    "list_objects",
    "list_objects_v2",
    "list_object_versions",
):
    setattr(S3Response, _name, _atomic(getattr(S3Response, _name)))


# --- A sorted index of each bucket's key names -------------------------------

_KeyStore = s3_utils._VersionedKeyStore
_INDEX = "_sorted_names"


def _sorted_names(store):
    """The store's key names in order, built on first use and kept up to date."""
    names = store.__dict__.get(_INDEX)
    if names is None:
        names = sorted(dict.keys(store))
        store.__dict__[_INDEX] = names
    return names


def _note(store, name):
    """Brings the index in line with whether `name` is now in the store."""
    names = store.__dict__.get(_INDEX)
    if names is None:
        return
    at = bisect.bisect_left(names, name)
    indexed = at < len(names) and names[at] == name
    present = dict.__contains__(store, name)
    if present and not indexed:
        names.insert(at, name)
    elif indexed and not present:
        del names[at]


def _noting(method):
    @functools.wraps(method)
    def noted(self, key, *args, **kwargs):
        try:
            return method(self, key, *args, **kwargs)
        finally:
            _note(self, key)

    return noted


for _name in ("__setitem__", "__delitem__", "setlist", "pop"):
    setattr(_KeyStore, _name, _noting(getattr(_KeyStore, _name)))


def _past(folder):
    """The least string greater than every string that starts with `folder`."""
    return folder[:-1] + chr(ord(folder[-1]) + 1)


def _list_objects_v2(
    self, bucket, prefix, delimiter, continuation_token, start_after, max_keys
):
    """ListObjectsV2 over the sorted index: one page costs its own length plus a
    bisection, not the bucket's size. Same results and tokens as moto's."""
    if isinstance(bucket, s3_models.FakeTableStorageBucket):
        return S3Backend._moto_list_objects_v2(
            self, bucket, prefix, delimiter, continuation_token, start_after, max_keys
        )
    if max_keys == 0:
        return [], False, None
    prefix = prefix or ""
    after = (
        self._pagination_tokens.get(continuation_token)
        if continuation_token
        else start_after
    )
    names = _sorted_names(bucket.keys)
    at = bisect.bisect_left(names, prefix)
    if after:
        at = max(at, bisect.bisect_right(names, after))
    page = []
    truncated = False
    while at < len(names):
        name = names[at]
        if not name.startswith(prefix):
            break
        rest = name[len(prefix):]
        if delimiter and delimiter in rest:
            folder = prefix + rest.split(delimiter)[0] + delimiter
            at = bisect.bisect_left(names, _past(folder))
            if after and folder <= after:
                continue
            entry = folder
        else:
            at += 1
            key = bucket.keys.get(name)
            if key is None or isinstance(key, FakeDeleteMarker):
                continue
            entry = key
        if len(page) == max_keys:
            truncated = True
            break
        page.append(entry)
    token = None
    if truncated and page:
        last = page[-1]
        last = last if isinstance(last, str) else last.name
        token = md5_hash(last.encode("utf-8")).hexdigest()
        self._pagination_tokens[token] = last
    return page, truncated, token


def _list_object_versions(
    self,
    bucket_name,
    delimiter=None,
    key_marker=None,
    max_keys=1000,
    prefix="",
    version_id_marker=None,
):
    """ListObjectVersions over the keys in the prefix's range only: moto's
    deep-copies every version of every key in the bucket for each call, which
    under the lock stalled every other request for seconds (the vault lists a
    document's versions to delete them all). moto's own code then runs on that
    range, so results and markers are the same."""
    bucket = self.get_bucket(bucket_name)
    store = bucket.keys
    names = _sorted_names(store)
    prefix = prefix or ""
    start = bisect.bisect_left(names, prefix)
    end = bisect.bisect_left(names, _past(prefix)) if prefix else len(names)
    if key_marker:
        # Names before the marker are skipped by moto's pagination anyway.
        start = max(start, bisect.bisect_left(names, key_marker))
    in_range = names[start:end]

    def iterlists():
        for name in in_range:
            versions = store.getlist(name)
            if versions:
                yield name, versions

    # Runs under the lock (the handler takes it), so no other call sees it.
    store.__dict__["iterlists"] = iterlists
    try:
        return S3Backend._moto_list_object_versions(
            self, bucket_name, delimiter, key_marker, max_keys, prefix, version_id_marker
        )
    finally:
        store.__dict__.pop("iterlists", None)


S3Backend._moto_list_objects_v2 = S3Backend.list_objects_v2
S3Backend.list_objects_v2 = _list_objects_v2
S3Backend._moto_list_object_versions = S3Backend.list_object_versions
S3Backend.list_object_versions = _list_object_versions

if __name__ == "__main__":
    main()
