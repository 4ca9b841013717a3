"""Production's static files storage: WhiteNoise's compressed, content-hashed files, without
turning a missing file into a 500.

With DEBUG=0, `{% static %}` looks each file up in the manifest that `collectstatic` writes;
the storage underneath (Django's) raises for a file that is not in it, so before
`collectstatic` has run — or after an upgrade that added a file and skipped it — every page with
a stylesheet was a 500. Here such a file keeps its plain name: the page renders (without its
styles until `collectstatic` runs) and the log says what to run, once per file and process.
`collectstatic` itself is unchanged: a file a stylesheet refers to that is missing still fails it.
"""

import logging

from whitenoise.storage import CompressedManifestStaticFilesStorage

logger = logging.getLogger(__name__)


class StaticFilesStorage(CompressedManifestStaticFilesStorage):
    # look a file missing from the manifest up in STATIC_ROOT (see stored_name) instead of raising
    manifest_strict = False

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._reported: set[str] = set()

    def stored_name(self, name):
        try:
            return super().stored_name(name)
        except ValueError:  # neither in the manifest nor in STATIC_ROOT: not collected
            if name not in self._reported:
                self._reported.add(name)
                logger.warning(
                    "static file %s has not been collected: run `manage.py collectstatic` "
                    "(pages are served without it meanwhile)",
                    name,
                )
            return name
