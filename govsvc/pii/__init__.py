"""PII detection and masking (English and Chinese) on Presidio.

Importing the package makes Presidio safe to run offline: tldextract never fetches the public suffix list, and each
pattern search gives up after ``REGEX_TIMEOUT_SECONDS`` (2 s unless set) instead of Presidio's 60 s.
"""

from __future__ import annotations

import logging
import os

logging.getLogger("presidio-analyzer").setLevel(logging.WARNING)  # it logs every recognizer load and lookup at INFO
os.environ.setdefault("TLDEXTRACT_PUBLIC_SUFFIX_LIST_URLS", "")
os.environ.setdefault("REGEX_TIMEOUT_SECONDS", "2")
