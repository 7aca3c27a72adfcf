"""moto_server, with S3's conditional PutObject made atomic.

S3 evaluates If-None-Match / If-Match and stores the object as one step: of two concurrent
creates of the same key, one gets 412. moto 5 checks the condition, then stores, in separate
steps under a threaded server, so two concurrent creates can both succeed (seen in
webhook_copy::same_webhook_ten_times_delivers_once_per_destination: two 202s for one job).
This launcher serialises conditional PutObjects, and only those, so moto behaves as S3 does.
"""

import sys
import threading

from moto.s3.responses import S3Response
from moto.server import main

_conditional = threading.Lock()
_put_object = S3Response.put_object


def put_object(self):
    if self.headers.get("If-None-Match") or self.headers.get("If-Match"):
        with _conditional:
            return _put_object(self)
    return _put_object(self)


S3Response.put_object = put_object

if __name__ == "__main__":
    sys.exit(main())
