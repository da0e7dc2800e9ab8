//! `ordo topic`: create, list, describe, alter and delete topics through a node's Kafka
//! listener, with the requests any Kafka client sends (CreateTopics, Metadata,
//! DescribeConfigs, IncrementalAlterConfigs, DeleteTopics).

use std::time::Duration;

use anyhow::{bail, Context as _};
use kafka_protocol::messages::create_partitions_request::CreatePartitionsTopic;
use kafka_protocol::messages::create_topics_request::{CreatableTopic, CreatableTopicConfig};
use kafka_protocol::messages::describe_configs_request::DescribeConfigsResource;
use kafka_protocol::messages::incremental_alter_configs_request::{
    AlterConfigsResource, AlterableConfig,
};
use kafka_protocol::messages::metadata_request::MetadataRequestTopic;
use kafka_protocol::messages::{
    CreatePartitionsRequest, CreateTopicsRequest, DeleteTopicsRequest, DescribeConfigsRequest,
    IncrementalAlterConfigsRequest, MetadataRequest, MetadataResponse, TopicName,
};
use kafka_protocol::protocol::StrBytes;
use ordo_streams::client::{error_name, KafkaClient};

/// Flags of `ordo topic`.
#[derive(Debug, Clone, clap::Args)]
pub struct TopicArgs {
    /// Kafka addresses of the nodes, comma-separated; the first that answers is used.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "127.0.0.1:9092",
        value_name = "HOST:PORT,...",
        global = true
    )]
    pub bootstrap: Vec<String>,
    /// Milliseconds a request may take.
    #[arg(long, default_value_t = 10_000, global = true)]
    pub timeout_ms: u64,
    /// What to do.
    #[command(subcommand)]
    pub command: TopicCommand,
}

/// `ordo topic` commands.
#[derive(Debug, Clone, clap::Subcommand)]
pub enum TopicCommand {
    /// Create a topic.
    Create {
        /// The topic's name.
        name: String,
        /// Partitions [default: 1].
        #[arg(long, default_value_t = -1, hide_default_value = true)]
        partitions: i32,
        /// Replicas of each partition [default: 3, or every node when there are fewer].
        #[arg(long, default_value_t = -1, hide_default_value = true)]
        replication_factor: i16,
        /// A topic config, `NAME=VALUE` (retention.ms, min.insync.replicas, …); repeatable.
        #[arg(long = "config", value_name = "NAME=VALUE")]
        configs: Vec<String>,
    },
    /// List the topics.
    List,
    /// Print a topic's partitions with their replicas and leaders.
    Describe {
        /// The topic's name.
        name: String,
    },
    /// Add partitions to a topic, or set or remove its configs.
    Alter {
        /// The topic's name.
        name: String,
        /// The topic's new partition count (above the current one).
        #[arg(long)]
        partitions: Option<i32>,
        /// A config to set, `NAME=VALUE`; repeatable.
        #[arg(long = "config", value_name = "NAME=VALUE")]
        configs: Vec<String>,
        /// A config to return to its default; repeatable.
        #[arg(long = "delete-config", value_name = "NAME")]
        deleted: Vec<String>,
    },
    /// Delete a topic.
    Delete {
        /// The topic's name.
        name: String,
    },
}

/// Runs `ordo topic`.
pub async fn run(args: TopicArgs) -> anyhow::Result<()> {
    let wait = Duration::from_millis(args.timeout_ms);
    let mut client = connect(&args.bootstrap, wait).await?;
    match args.command {
        TopicCommand::Create {
            name,
            partitions,
            replication_factor,
            configs,
        } => {
            let mut topic = CreatableTopic::default()
                .with_name(topic_name(&name))
                .with_num_partitions(partitions)
                .with_replication_factor(replication_factor);
            for config in &configs {
                let (key, value) = name_value(config)?;
                topic.configs.push(
                    CreatableTopicConfig::default()
                        .with_name(StrBytes::from_string(key.to_string()))
                        .with_value(Some(StrBytes::from_string(value.to_string()))),
                );
            }
            let request = CreateTopicsRequest::default()
                .with_topics(vec![topic])
                .with_timeout_ms(args.timeout_ms.min(i32::MAX as u64) as i32);
            let response = client.send(&request).await?;
            let result = only(&response.topics, &client)?;
            refused(
                &format!("topic {name:?} not created"),
                result.error_code,
                result.error_message.as_deref(),
            )?;
            println!(
                "created topic {name} ({} partitions, {} replicas each, id {})",
                result.num_partitions, result.replication_factor, result.topic_id
            );
        }
        TopicCommand::List => {
            let metadata = metadata(&mut client, None).await?;
            for topic in &metadata.topics {
                if let Some(name) = &topic.name {
                    println!("{}", name.as_str());
                }
            }
        }
        TopicCommand::Describe { name } => {
            let metadata = metadata(&mut client, Some(&name)).await?;
            let topic = only(&metadata.topics, &client)?;
            refused(&format!("topic {name:?}"), topic.error_code, None)?;
            println!(
                "topic {name}  id {}  partitions {}",
                topic.topic_id,
                topic.partitions.len()
            );
            let described = client
                .send(&DescribeConfigsRequest::default().with_resources(vec![
                    DescribeConfigsResource::default()
                        .with_resource_type(TOPIC_RESOURCE)
                        .with_resource_name(StrBytes::from_string(name.clone()))
                        .with_configuration_keys(None),
                ]))
                .await?;
            for result in &described.results {
                for config in &result.configs {
                    let origin = if config.config_source == 1 {
                        ""
                    } else {
                        " (default)"
                    };
                    println!(
                        "  config {}={}{origin}",
                        config.name.as_str(),
                        config.value.as_deref().unwrap_or("")
                    );
                }
            }
            for p in &topic.partitions {
                let leader = match p.leader_id.0 {
                    -1 => "-".to_string(),
                    id => id.to_string(),
                };
                let replicas = ids(p.replica_nodes.iter().map(|b| b.0));
                let isr = ids(p.isr_nodes.iter().map(|b| b.0));
                let state = match p.error_code {
                    0 => String::new(),
                    code => format!("  ({})", error_name(code)),
                };
                println!(
                    "  partition {:<5} leader {leader:<6} epoch {:<6} replicas {replicas:<12} isr {isr}{state}",
                    p.partition_index, p.leader_epoch
                );
            }
        }
        TopicCommand::Alter {
            name,
            partitions,
            configs,
            deleted,
        } => {
            if partitions.is_none() && configs.is_empty() && deleted.is_empty() {
                bail!(
                    "nothing to alter: give --partitions N, --config NAME=VALUE or --delete-config NAME"
                );
            }
            if let Some(count) = partitions {
                let request = CreatePartitionsRequest::default()
                    .with_topics(vec![CreatePartitionsTopic::default()
                        .with_name(topic_name(&name))
                        .with_count(count)
                        .with_assignments(None)])
                    .with_timeout_ms(args.timeout_ms.min(i32::MAX as u64) as i32);
                let response = client.send(&request).await?;
                let result = only(&response.results, &client)?;
                refused(
                    &format!("topic {name:?} not grown"),
                    result.error_code,
                    result.error_message.as_deref(),
                )?;
                println!("topic {name} has {count} partitions");
                if configs.is_empty() && deleted.is_empty() {
                    return Ok(());
                }
            }
            let mut changes = Vec::new();
            for config in &configs {
                let (key, value) = name_value(config)?;
                changes.push(
                    AlterableConfig::default()
                        .with_name(StrBytes::from_string(key.to_string()))
                        .with_config_operation(0)
                        .with_value(Some(StrBytes::from_string(value.to_string()))),
                );
            }
            for key in &deleted {
                changes.push(
                    AlterableConfig::default()
                        .with_name(StrBytes::from_string(key.clone()))
                        .with_config_operation(1),
                );
            }
            let request = IncrementalAlterConfigsRequest::default().with_resources(vec![
                AlterConfigsResource::default()
                    .with_resource_type(TOPIC_RESOURCE)
                    .with_resource_name(StrBytes::from_string(name.clone()))
                    .with_configs(changes),
            ]);
            let response = client.send(&request).await?;
            let result = only(&response.responses, &client)?;
            refused(
                &format!("topic {name:?} not altered"),
                result.error_code,
                result.error_message.as_deref(),
            )?;
            println!("altered topic {name}");
        }
        TopicCommand::Delete { name } => {
            let request = DeleteTopicsRequest::default()
                .with_topic_names(vec![topic_name(&name)])
                .with_timeout_ms(args.timeout_ms.min(i32::MAX as u64) as i32);
            // DeleteTopics v6 names topics in another field; ask at 5 at most.
            let response = client.send_at(5, &request).await?;
            let result = only(&response.responses, &client)?;
            refused(
                &format!("topic {name:?} not deleted"),
                result.error_code,
                result.error_message.as_deref(),
            )?;
            println!("deleted topic {name}");
        }
    }
    Ok(())
}

/// The first node of `bootstrap` that answers.
async fn connect(bootstrap: &[String], wait: Duration) -> anyhow::Result<KafkaClient> {
    let mut errors = Vec::new();
    for addr in bootstrap {
        match KafkaClient::connect(addr, wait).await {
            Ok(client) => return Ok(client),
            Err(error) => errors.push(error.to_string()),
        }
    }
    bail!(
        "no node answered on its Kafka port (--bootstrap, the nodes' --kafka-addr): {}",
        errors.join("; ")
    )
}

async fn metadata(
    client: &mut KafkaClient,
    name: Option<&str>,
) -> anyhow::Result<MetadataResponse> {
    let topics = name.map(|n| vec![MetadataRequestTopic::default().with_name(Some(topic_name(n)))]);
    // Asking is not creating, whatever the node's auto-creation setting.
    let request = MetadataRequest::default()
        .with_topics(topics)
        .with_allow_auto_topic_creation(false);
    client
        .send(&request)
        .await
        .with_context(|| format!("asking {} for metadata", client.addr()))
}

/// The answer about the one topic a request named.
fn only<'a, T>(answers: &'a [T], client: &KafkaClient) -> anyhow::Result<&'a T> {
    match answers.first() {
        Some(answer) => Ok(answer),
        None => bail!("{} answered for no topic", client.addr()),
    }
}

/// `Ok` for error code 0; otherwise why `what` failed: Kafka's name for the code and the
/// broker's message, if it gave one.
fn refused(what: &str, code: i16, message: Option<&str>) -> anyhow::Result<()> {
    if code == 0 {
        return Ok(());
    }
    match message.filter(|m| !m.is_empty()) {
        Some(message) => bail!("{what}: {}: {message}", error_name(code)),
        None => bail!("{what}: {}", error_name(code)),
    }
}

/// Kafka's resource type of a topic.
const TOPIC_RESOURCE: i8 = 2;

/// `NAME=VALUE`, split.
fn name_value(config: &str) -> anyhow::Result<(&str, &str)> {
    match config.split_once('=') {
        Some((name, value)) if !name.is_empty() => Ok((name, value)),
        _ => bail!("--config {config:?}: expected NAME=VALUE"),
    }
}

fn topic_name(name: &str) -> TopicName {
    TopicName(StrBytes::from_string(name.to_string()))
}

fn ids(ids: impl Iterator<Item = i32>) -> String {
    let list: Vec<String> = ids.map(|id| id.to_string()).collect();
    if list.is_empty() {
        "-".into()
    } else {
        list.join(",")
    }
}
