"""The JVM and Maven poms of the local stack: which java runs, and whether it is new enough.

Apache Kafka (:mod:`.apache_kafka`) and the bench's Apache Flink contender
(``bench/flink_job.py``) both run from jars Maven copied out of Maven Central, their versions
pinned in a pom; this module reads those pins and finds a Java 17 or newer.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import xml.etree.ElementTree as ET
from pathlib import Path

JAVA_MAJOR = 17  # Kafka 4 brokers and Flink 2 both need 17
_POM_NS = "{http://maven.apache.org/POM/4.0.0}"


def pom_property(pom: Path, name: str) -> str:
    """The value of ``<properties><name>`` in ``pom`` (a ValueError if it has none)."""
    found = ET.parse(pom).getroot().find(f"{_POM_NS}properties/{_POM_NS}{name}")
    if found is None or not found.text:
        raise ValueError(f"no {name} in {pom}")
    return found.text.strip()


def java_binary() -> str | None:
    """``$JAVA_HOME/bin/java`` if there is one, else ``java`` on PATH (None: neither)."""
    home = os.environ.get("JAVA_HOME")
    if home and os.access(Path(home) / "bin" / "java", os.X_OK):
        return str(Path(home) / "bin" / "java")
    return shutil.which("java")


def java_unavailable() -> str | None:
    """Why no Java 17 or newer can run here (None: it can)."""
    java = java_binary()
    if java is None:
        return f"no Java {JAVA_MAJOR} (no java on PATH or in JAVA_HOME)"
    try:
        shown = subprocess.run([java, "-version"], capture_output=True, text=True,
                               timeout=30).stderr
    except (OSError, subprocess.SubprocessError) as exc:
        return f"{java} -version failed: {exc}"
    match = re.search(r'version "(\d+)(?:\.(\d+))?', shown)
    major = 0 if match is None else int(match.group(1))
    if major == 1 and match is not None and match.group(2):  # "1.8.0" is Java 8
        major = int(match.group(2))
    if major < JAVA_MAJOR:
        return f"no Java {JAVA_MAJOR} ({java} is {major or 'of an unknown version'})"
    return None
