from __future__ import annotations

import xml.etree.ElementTree as ET

from dlpipe.localstack import versions
from dlpipe.localstack.maven import render_pom

NS = {"m": "http://maven.apache.org/POM/4.0.0"}


def test_pom_pins_overrides_and_excludes_from_every_dependency() -> None:
    pom = ET.fromstring(render_pom(
        versions.SPARK_PACKAGES, overrides=versions.SPARK_PACKAGE_OVERRIDES,
        excludes=["org.slf4j:slf4j-api"],
    ))
    deps = pom.findall("m:dependencies/m:dependency", NS)
    assert [f"{d.findtext('m:groupId', namespaces=NS)}:{d.findtext('m:artifactId', namespaces=NS)}:"
            f"{d.findtext('m:version', namespaces=NS)}" for d in deps] == list(versions.SPARK_PACKAGES)
    for d in deps:
        assert [e.findtext("m:artifactId", namespaces=NS)
                for e in d.findall("m:exclusions/m:exclusion", NS)] == ["slf4j-api"]
    managed = {
        d.findtext("m:artifactId", namespaces=NS): d.findtext("m:version", namespaces=NS)
        for d in pom.findall("m:dependencyManagement/m:dependencies/m:dependency", NS)
    }
    assert managed == {"spark-token-provider-kafka-0-10_2.13": "4.0.0"}
