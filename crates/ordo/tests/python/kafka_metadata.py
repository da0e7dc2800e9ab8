"""Asks a running Ordo cluster for its Kafka metadata through kafka-python and through
confluent-kafka (librdkafka), and checks what both report.

Usage: kafka_metadata.py BOOTSTRAP EXPECTED_BROKERS
  BOOTSTRAP         host:port[,host:port...]
  EXPECTED_BROKERS  id=host:port[,...], every broker the cluster must list

Exits 0 after printing "all checks passed"; otherwise prints what differed and exits 1.
"""

import sys

from confluent_kafka.admin import AdminClient
from kafka import KafkaAdminClient, KafkaConsumer


def expected_brokers(text):
    brokers = {}
    for item in text.split(","):
        broker_id, addr = item.split("=")
        host, port = addr.rsplit(":", 1)
        brokers[int(broker_id)] = (host, int(port))
    return brokers


def check(what, got, want):
    if got != want:
        print(f"{what}: got {got!r}, want {want!r}")
        sys.exit(1)


def main():
    bootstrap, want = sys.argv[1], expected_brokers(sys.argv[2])

    # kafka-python: the admin client's view of the cluster, and a consumer's topic list.
    admin = KafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=10000)
    cluster = admin.describe_cluster()
    admin.close()
    got = {b["broker_id"]: (b["host"], b["port"]) for b in cluster["brokers"]}
    check("kafka-python brokers", got, want)
    check("kafka-python controller is a broker", cluster["controller_id"] in want, True)
    check(
        "kafka-python cluster id",
        str(cluster["cluster_id"]).startswith("ordo-"),
        True,
    )
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, request_timeout_ms=10000)
    check("kafka-python topics", consumer.topics(), set())
    consumer.close()

    # confluent-kafka (librdkafka): the admin client's metadata.
    metadata = AdminClient({"bootstrap.servers": bootstrap}).list_topics(timeout=10)
    got = {b.id: (b.host, b.port) for b in metadata.brokers.values()}
    check("confluent-kafka brokers", got, want)
    check("confluent-kafka controller is a broker", metadata.controller_id in want, True)
    check("confluent-kafka cluster id", metadata.cluster_id, cluster["cluster_id"])
    check("confluent-kafka topics", metadata.topics, {})
    print("all checks passed")


if __name__ == "__main__":
    main()
