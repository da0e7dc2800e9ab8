"""Creates, lists and deletes topics on a running Ordo cluster through kafka-python and
confluent-kafka (librdkafka).

Usage: kafka_topics.py BOOTSTRAP_A BOOTSTRAP_B
  Topics are created through BOOTSTRAP_A and listed and deleted through BOOTSTRAP_B (another
  node), so what one node recorded is what another reports.

Leaves the topics "orders" (3 partitions, 3 replicas) and "events" (4 partitions, 3
replicas) and exits 0 after printing "all checks passed"; otherwise prints what differed and
exits 1.
"""

import sys

from confluent_kafka.admin import (
    AdminClient,
    AlterConfigOpType,
    ConfigEntry,
    ConfigResource,
    NewTopic as ConfluentNewTopic,
    ResourceType,
)
from kafka.admin import ConfigResource as KafkaConfigResource
from kafka.admin import ConfigResourceType, KafkaAdminClient, NewTopic
from kafka.errors import InvalidConfigurationError, TopicAlreadyExistsError


def check(what, got, want):
    if got != want:
        print(f"{what}: got {got!r}, want {want!r}")
        sys.exit(1)


def main():
    a, b = sys.argv[1], sys.argv[2]

    admin = KafkaAdminClient(bootstrap_servers=a, request_timeout_ms=20000)
    created = admin.create_topics(
        [
            NewTopic("orders", 3, 3),
            NewTopic("logs", 2, 1, topic_configs={"retention.ms": "3600000"}),
        ]
    )
    check(
        "kafka-python create",
        [(t["name"], t["error_code"], t["num_partitions"]) for t in created["topics"]],
        [("orders", 0, 3), ("logs", 0, 2)],
    )
    try:
        admin.create_topics(
            [NewTopic("unclean", 1, 3, topic_configs={"unclean.leader.election.enable": "true"})]
        )
        check("unclean.leader.election.enable=true refused", False, True)
    except InvalidConfigurationError as error:
        check("why unclean election is refused", "majority" in str(error), True)
    try:
        admin.create_topics([NewTopic("orders", 1, 1)])
        check("a second orders refused", False, True)
    except TopicAlreadyExistsError:
        pass
    admin.close()

    other = AdminClient({"bootstrap.servers": b})
    futures = other.create_topics([ConfluentNewTopic("events", 4, 3)], request_timeout=20)
    for future in futures.values():
        future.result()
    topics = other.list_topics(timeout=10).topics
    check(
        "confluent-kafka topics",
        {name: len(t.partitions) for name, t in topics.items()},
        {"orders": 3, "logs": 2, "events": 4},
    )
    replicas = sorted(tuple(sorted(p.replicas)) for p in topics["orders"].partitions.values())
    check("orders' replicas", replicas, [(1, 2, 3)] * 3)
    for future in other.delete_topics(["logs"], request_timeout=20).values():
        future.result()
    check(
        "topics after the delete",
        sorted(other.list_topics(timeout=10).topics),
        ["events", "orders"],
    )

    # Configs: described with their defaults, altered through one client, seen by the other.
    resource = ConfigResource(ResourceType.TOPIC, "orders")
    configs = other.describe_configs([resource])[resource].result()
    check("orders' min.insync.replicas", configs["min.insync.replicas"].value, "1")
    check("orders' default", configs["min.insync.replicas"].is_default, True)
    resource = ConfigResource(
        ResourceType.TOPIC,
        "orders",
        incremental_configs=[
            ConfigEntry(
                "min.insync.replicas",
                "2",
                incremental_operation=AlterConfigOpType.SET,
            )
        ],
    )
    for future in other.incremental_alter_configs([resource]).values():
        future.result()
    admin = KafkaAdminClient(bootstrap_servers=b, request_timeout_ms=20000)
    described = admin.describe_configs(
        [KafkaConfigResource(ConfigResourceType.TOPIC, "orders")]
    )
    # {resource type: {resource name: {config: {...}}}}, only configs set on the topic.
    topic_configs = next(iter(described.values()))["orders"]
    value = topic_configs.get("min.insync.replicas", {}).get("value")
    check("kafka-python sees the altered config", value, "2")
    cluster = admin.describe_cluster()
    check("kafka-python describe_cluster brokers", len(cluster["brokers"]), 3)
    admin.close()
    print("all checks passed")


if __name__ == "__main__":
    main()
