//! Parameter and multiply-add counts, computed from the specification alone
//! so that the trainer, the exporter and the docs report the same numbers.

use crate::network::{ModelSpec, Shortcut};

/// What a network costs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Cost {
    /// Learned parameters: live kernel weights, projections, BN scale and shift.
    pub params: usize,
    /// Multiply-adds of one forward pass over one image (live weights only).
    pub macs: usize,
}

impl std::ops::AddAssign for Cost {
    fn add_assign(&mut self, o: Cost) {
        self.params += o.params;
        self.macs += o.macs;
    }
}

fn conv(out_ch: usize, in_ch: usize, k: usize, hw: (usize, usize)) -> Cost {
    let params = out_ch * in_ch * k * k;
    Cost {
        params,
        macs: params * hw.0 * hw.1,
    }
}

fn bn(ch: usize) -> Cost {
    Cost {
        params: 2 * ch,
        macs: 0,
    }
}

impl ModelSpec {
    /// Parameters and multiply-adds of this network.
    pub fn cost(&self) -> Cost {
        let mut total = Cost::default();
        let mut hw = (self.input.height, self.input.width);
        total += conv(self.stem_channels(), self.input.channels, 3, hw);
        total += bn(self.stem_channels());
        for block in self.blocks() {
            let block_out_hw = (
                Self::conv_out(hw.0, block.units[0].stride),
                Self::conv_out(hw.1, block.units[0].stride),
            );
            for u in &block.units {
                hw = (
                    Self::conv_out(hw.0, u.stride),
                    Self::conv_out(hw.1, u.stride),
                );
                let live = (0..u.out_ch)
                    .map(|o| {
                        (0..u.in_ch)
                            .filter(|&i| self.mask.live(o, u.out_res, i, u.in_res))
                            .count()
                    })
                    .sum::<usize>();
                total += Cost {
                    params: live * 9,
                    macs: live * 9 * hw.0 * hw.1,
                };
                total += bn(u.out_ch);
                if let Some(Shortcut::Conv {
                    in_res, out_res, ..
                }) = u.shortcut
                {
                    total += conv(out_res, in_res, 1, hw);
                }
            }
            if let Some(Shortcut::Conv {
                in_res, out_res, ..
            }) = block.outer
            {
                total += conv(out_res, in_res, 1, block_out_hw);
            }
        }
        total += conv(self.num_classes, self.head_channels(), 1, hw);
        total += bn(self.num_classes);
        total
    }
}

#[cfg(test)]
mod tests {
    use crate::{InputSpec, Variant, preset};

    #[test]
    fn paper_preset_matches_the_published_size() {
        // The paper (arXiv:1603.08029): about 9.5 M parameters and 1.28 G multiply-adds per 32x32 image.
        let spec = preset::build("paper", Variant::Rir, InputSpec::new(3, 32, 32), 10).unwrap();
        let c = spec.cost();
        assert!((9_400_000..9_600_000).contains(&c.params), "{}", c.params);
        assert!(
            (1_270_000_000..1_300_000_000).contains(&c.macs),
            "{}",
            c.macs
        );
    }

    #[test]
    fn variants_at_equal_width_have_nearly_equal_cost() {
        let input = InputSpec::new(3, 32, 32);
        let rir = preset::build("small", Variant::Rir, input, 10)
            .unwrap()
            .cost();
        for v in [Variant::Resnet, Variant::Cnn, Variant::ResnetInit] {
            let c = preset::build("small", v, input, 10).unwrap().cost();
            let ratio = c.params as f64 / rir.params as f64;
            assert!((0.97..1.03).contains(&ratio), "{v}: {ratio}");
        }
    }

    #[test]
    fn masked_blocks_are_not_counted() {
        let input = InputSpec::new(1, 28, 28);
        let full = preset::build("tiny", Variant::Rir, input, 10).unwrap();
        let mut diag = full.clone();
        diag.mask = "1001".parse().unwrap();
        let (f, d) = (full.cost(), diag.cost());
        assert!(d.params < f.params && d.macs < f.macs);
    }
}
