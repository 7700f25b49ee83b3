//! The federation plan on the wire.

use super::{ProtocolError, enum_of, proto, usize_of};
use crate::config::{
    FederationPlan, InfluenceSection, Schema, SecureAggregationMode, SecureAggregationSection, StrategyConfig,
    TrainingSection, Weighting,
};
use crate::model::{ModelSpec, TaskKind};

impl From<TaskKind> for proto::ModelTask {
    fn from(t: TaskKind) -> Self {
        match t {
            TaskKind::Binary => Self::Binary,
            TaskKind::Multiclass => Self::Multiclass,
            TaskKind::Regression => Self::Regression,
        }
    }
}

fn task_of(v: i32) -> Result<TaskKind, ProtocolError> {
    match enum_of::<proto::ModelTask>("task", v)? {
        proto::ModelTask::Binary => Ok(TaskKind::Binary),
        proto::ModelTask::Multiclass => Ok(TaskKind::Multiclass),
        proto::ModelTask::Regression => Ok(TaskKind::Regression),
        proto::ModelTask::Unspecified => Err(ProtocolError::Missing("task")),
    }
}

impl From<&FederationPlan> for proto::Plan {
    fn from(p: &FederationPlan) -> Self {
        let s = &p.schema;
        let t = &p.training;
        let a = &p.secure_aggregation;
        let strategy = match p.strategy {
            StrategyConfig::Fedavg => proto::strategy::Kind::Fedavg(proto::FedAvg {}),
            StrategyConfig::Fedprox { mu } => proto::strategy::Kind::Fedprox(proto::FedProx { mu }),
            StrategyConfig::Fedadam { lr, beta1, beta2, tau } => {
                proto::strategy::Kind::Fedadam(proto::FedAdam { lr, beta1, beta2, tau })
            }
            StrategyConfig::Median => proto::strategy::Kind::Median(proto::Median {}),
            StrategyConfig::TrimmedMean { trim } => proto::strategy::Kind::TrimmedMean(proto::TrimmedMean { trim }),
        };
        let mode = match a.mode {
            SecureAggregationMode::None => proto::SecureAggregationMode::None,
            SecureAggregationMode::ThresholdRlwe => proto::SecureAggregationMode::ThresholdRlwe,
        };
        Self {
            federation_id: p.federation_id.clone(),
            model_name: p.model_name.clone(),
            schema: Some(proto::Schema {
                features: s.features.clone(),
                label: s.label.clone(),
                task: proto::ModelTask::from(s.task).into(),
                classes: s.classes.map(|c| c as u64),
                bounds: s
                    .bounds
                    .iter()
                    .flatten()
                    .map(|[lower, upper]| proto::FeatureBounds { lower: *lower, upper: *upper })
                    .collect(),
                label_bounds: s.label_bounds.map(|[lower, upper]| proto::FeatureBounds { lower, upper }),
            }),
            model: Some(proto::ModelSpec {
                layers: p.model.layers.iter().map(|&w| w as u64).collect(),
                task: proto::ModelTask::from(p.model.task).into(),
            }),
            training: Some(proto::Training {
                rounds: t.rounds,
                local_epochs: t.local_epochs,
                learning_rate: t.learning_rate,
                batch_size: t.batch_size as u64,
                min_clients: t.min_clients as u64,
                round_deadline_secs: t.round_deadline_secs,
                clients_per_round: t.clients_per_round.map(|k| k as u64),
                max_round_failures: t.max_round_failures,
            }),
            strategy: Some(proto::Strategy { kind: Some(strategy) }),
            secure_aggregation: Some(proto::SecureAggregation {
                mode: mode.into(),
                max_colluders: a.max_colluders as u64,
                threshold: a.threshold.map(|t| t as u64),
                min_participants: a.min_participants.map(|m| m as u64),
            }),
            influence: Some((&p.influence).into()),
        }
    }
}

impl From<&InfluenceSection> for proto::Influence {
    fn from(i: &InfluenceSection) -> Self {
        let weighting = match i.weighting {
            Weighting::Examples => proto::Weighting::Examples,
            Weighting::Uniform => proto::Weighting::Uniform,
        };
        Self {
            weighting: weighting.into(),
            max_weight: i.max_weight,
            max_share: i.max_share,
            max_update_norm: i.max_update_norm,
        }
    }
}

impl TryFrom<proto::Influence> for InfluenceSection {
    type Error = ProtocolError;

    /// Decodes and validates the influence bounds.
    fn try_from(i: proto::Influence) -> Result<Self, ProtocolError> {
        let weighting = match enum_of::<proto::Weighting>("weighting", i.weighting)? {
            proto::Weighting::Examples => Weighting::Examples,
            proto::Weighting::Uniform => Weighting::Uniform,
            proto::Weighting::Unspecified => return Err(ProtocolError::Missing("weighting")),
        };
        let section =
            Self { weighting, max_weight: i.max_weight, max_share: i.max_share, max_update_norm: i.max_update_norm };
        section.validate().map_err(|e| ProtocolError::invalid("influence", e))?;
        Ok(section)
    }
}

impl TryFrom<proto::Plan> for FederationPlan {
    type Error = ProtocolError;

    /// Decodes a plan and validates its schema and model, so a node never trains against a plan it cannot serve.
    fn try_from(p: proto::Plan) -> Result<Self, ProtocolError> {
        let s = p.schema.ok_or(ProtocolError::Missing("schema"))?;
        let bounds = match s.bounds.len() {
            0 => None,
            _ => Some(s.bounds.iter().map(|b| [b.lower, b.upper]).collect()),
        };
        let schema = Schema {
            features: s.features,
            label: s.label,
            task: task_of(s.task)?,
            classes: s.classes.map(|c| usize_of("classes", c)).transpose()?,
            bounds,
            label_bounds: s.label_bounds.map(|b| [b.lower, b.upper]),
        };
        schema.validate().map_err(|e| ProtocolError::invalid("schema", e))?;
        let m = p.model.ok_or(ProtocolError::Missing("model"))?;
        let model = ModelSpec {
            layers: m.layers.into_iter().map(|w| usize_of("layers", w)).collect::<Result<_, _>>()?,
            task: task_of(m.task)?,
        };
        model.validate().map_err(|e| ProtocolError::invalid("model", e))?;
        let t = p.training.ok_or(ProtocolError::Missing("training settings"))?;
        let training = TrainingSection {
            rounds: t.rounds,
            local_epochs: t.local_epochs,
            learning_rate: t.learning_rate,
            batch_size: usize_of("batch_size", t.batch_size)?,
            min_clients: usize_of("min_clients", t.min_clients)?,
            round_deadline_secs: t.round_deadline_secs,
            clients_per_round: t.clients_per_round.map(|k| usize_of("clients_per_round", k)).transpose()?,
            max_round_failures: t.max_round_failures,
        };
        let strategy = match p.strategy.and_then(|s| s.kind).ok_or(ProtocolError::Missing("strategy"))? {
            proto::strategy::Kind::Fedavg(_) => StrategyConfig::Fedavg,
            proto::strategy::Kind::Fedprox(f) => StrategyConfig::Fedprox { mu: f.mu },
            proto::strategy::Kind::Fedadam(f) => {
                StrategyConfig::Fedadam { lr: f.lr, beta1: f.beta1, beta2: f.beta2, tau: f.tau }
            }
            proto::strategy::Kind::Median(_) => StrategyConfig::Median,
            proto::strategy::Kind::TrimmedMean(t) => StrategyConfig::TrimmedMean { trim: t.trim },
        };
        let a = p.secure_aggregation.ok_or(ProtocolError::Missing("secure aggregation settings"))?;
        let mode = match enum_of::<proto::SecureAggregationMode>("secure aggregation mode", a.mode)? {
            proto::SecureAggregationMode::None => SecureAggregationMode::None,
            proto::SecureAggregationMode::ThresholdRlwe => SecureAggregationMode::ThresholdRlwe,
            proto::SecureAggregationMode::Unspecified => return Err(ProtocolError::Missing("secure aggregation mode")),
        };
        let secure_aggregation = SecureAggregationSection {
            mode,
            max_colluders: usize_of("max_colluders", a.max_colluders)?,
            threshold: a.threshold.map(|t| usize_of("threshold", t)).transpose()?,
            min_participants: a.min_participants.map(|m| usize_of("min_participants", m)).transpose()?,
        };
        let influence = p.influence.ok_or(ProtocolError::Missing("influence settings"))?.try_into()?;
        Ok(Self {
            federation_id: p.federation_id,
            model_name: p.model_name,
            schema,
            model,
            training,
            strategy,
            secure_aggregation,
            influence,
        })
    }
}
