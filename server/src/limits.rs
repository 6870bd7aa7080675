//! How large one request may be on each front end, sized from the models
//! served unless the operator says otherwise.
//!
//! A fixed 64 MiB limit let one request carry 250 times what the largest
//! legal request of these models needs, and each byte over the need is
//! memory an attacker chooses. The largest legal inference request is
//! `max_batch` images of `c x h x w` float32 values; the limits below give
//! it headroom per encoding (raw or typed protobuf: 2x; JSON text, up to
//! about 32 characters a number: 8x), and never go under [`FLOOR`] so that
//! models loaded later on a small server still fit. Image calls take the
//! largest encoded image (`--max-image-bytes`) instead.

use crate::registry::{Models, VersionState};

/// No derived limit is smaller than this.
pub(crate) const FLOOR: usize = 4 << 20;

/// Bytes added to every derived limit for names, shapes and parameters.
pub(crate) const HEADROOM: usize = 64 << 10;

/// The request size limits of the front ends, bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct MessageLimits {
    /// gRPC ModelInfer (and every other KServe call).
    pub(crate) grpc_infer: usize,
    /// gRPC Classify.
    pub(crate) grpc_classify: usize,
    /// REST bodies (after decompression).
    pub(crate) rest: usize,
    /// REST `/classify` bodies.
    pub(crate) rest_image: usize,
}

impl MessageLimits {
    /// `given` (`--max-message-bytes`) for every front end, or limits
    /// sized from `models` and `max_image_bytes`.
    pub(crate) fn resolve(given: Option<usize>, models: &Models, max_image_bytes: usize) -> Self {
        if let Some(n) = given {
            return MessageLimits {
                grpc_infer: n,
                grpc_classify: n,
                rest: n,
                rest_image: n,
            };
        }
        let tensor = largest_tensor_bytes(models);
        let image = max_image_bytes.saturating_add(HEADROOM).max(FLOOR);
        MessageLimits {
            grpc_infer: sized(tensor, 2),
            grpc_classify: image,
            rest: sized(tensor, 8),
            rest_image: image,
        }
    }

    /// The largest of them (what a reader must be able to hold).
    pub(crate) fn largest(&self) -> usize {
        self.grpc_infer
            .max(self.grpc_classify)
            .max(self.rest)
            .max(self.rest_image)
    }
}

fn sized(tensor: usize, factor: usize) -> usize {
    tensor
        .saturating_mul(factor)
        .saturating_add(HEADROOM)
        .max(FLOOR)
}

/// The largest float32 batch any served version takes, bytes.
pub(crate) fn largest_tensor_bytes(models: &Models) -> usize {
    models
        .by_name
        .values()
        .flatten()
        .filter_map(|v| match &v.state {
            VersionState::Ready { desc, batcher } => Some(
                desc.chw
                    .iter()
                    .product::<usize>()
                    .saturating_mul(batcher.config.max_batch())
                    .saturating_mul(4),
            ),
            VersionState::Unavailable { .. } => None,
        })
        .max()
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn derived_limits_give_each_encoding_its_headroom_over_a_floor() {
        // By hand: CIFAR at batch 256 is 256 x 3 x 32 x 32 x 4 = 3,145,728
        // bytes; raw gets 2x + 64 KiB, JSON 8x + 64 KiB.
        assert_eq!(sized(3_145_728, 2), 6_356_992);
        assert_eq!(sized(3_145_728, 8), 25_231_360);
        // Fashion-MNIST at batch 64 (200,704 bytes) stays at the floor.
        assert_eq!(sized(200_704, 2), 4 << 20);
        assert_eq!(sized(200_704, 8), 4 << 20);
        let empty = Models::default();
        let auto = MessageLimits::resolve(None, &empty, 16 << 20);
        assert_eq!(auto.grpc_infer, 4 << 20);
        assert_eq!(auto.rest_image, (16 << 20) + (64 << 10));
        assert_eq!(auto.largest(), (16 << 20) + (64 << 10));
        let given = MessageLimits::resolve(Some(1000), &empty, 16 << 20);
        assert_eq!(given.grpc_classify, 1000);
        assert_eq!(given.rest, 1000);
    }
}
