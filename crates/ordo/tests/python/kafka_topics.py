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

from confluent_kafka.admin import AdminClient, NewTopic as ConfluentNewTopic
from kafka.admin import KafkaAdminClient, NewTopic
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
    print("all checks passed")


if __name__ == "__main__":
    main()
