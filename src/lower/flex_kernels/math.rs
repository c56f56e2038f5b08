//! `exp` and `erf` in f32 without branches or library calls, so that the loops calling them
//! vectorize. `erf` is its series near 0 and Abramowitz and Stegun's 7.1.26 beyond (absolute
//! error under 3e-7), `exp` a degree-6 polynomial after range reduction (relative error under
//! 4e-7); the tests below hold them to that against f64.

/// 1 / (1 + e^(−x)); `exp`'s clamp keeps e^(−x) finite, so σ is 0, never NaN, far below 0.
#[inline(always)]
pub(super) fn sigmoid(x: f32) -> f32 {
    1.0 / (1.0 + exp(-x))
}

#[inline(always)]
pub(super) fn normal_cdf(x: f32) -> f32 {
    0.5 * (1.0 + erf(x * std::f32::consts::FRAC_1_SQRT_2))
}

#[inline(always)]
pub(super) fn normal_pdf(x: f32) -> f32 {
    // 1/√(2π)
    0.398_942_3 * exp(-0.5 * x * x)
}

/// erf: below |x| = 1/2 its Maclaurin series to x¹¹ (truncation under 2e-8), above it
/// Abramowitz and Stegun 7.1.26, `1 − (a1 t + … + a5 t⁵) e^(−x²)` with `t = 1/(1 + p|x|)`
/// (where the subtraction from 1 loses little). Both are computed and one is selected, which
/// the compiler turns into a blend rather than a branch.
#[inline(always)]
pub(super) fn erf(x: f32) -> f32 {
    let a = x.abs();
    let t = 1.0 / (1.0 + 0.327_591_1 * a);
    let poly = t
        * (0.254_829_6
            + t * (-0.284_496_72 + t * (1.421_413_8 + t * (-1.453_152 + t * 1.061_405_4))));
    let far = 1.0 - poly * exp(-a * a);
    let s = a * a;
    // 2/√π (a − a³/3 + a⁵/10 − a⁷/42 + a⁹/216 − a¹¹/1320)
    let near = std::f32::consts::FRAC_2_SQRT_PI
        * a
        * (1.0
            + s * (-1.0 / 3.0
                + s * (1.0 / 10.0 + s * (-1.0 / 42.0 + s * (1.0 / 216.0 + s * (-1.0 / 1320.0))))));
    (if a < 0.5 { near } else { far }).copysign(x)
}

/// e^x: x = n ln 2 + f with |f| ≤ ln 2 / 2, e^f by its Taylor polynomial to f⁶, times 2ⁿ built
/// in the exponent bits. Inputs are clamped to [−87, 88], where 2ⁿ stays a normal number.
#[inline(always)]
pub(super) fn exp(x: f32) -> f32 {
    // Adding 1.5 · 2²³ rounds to an integer, which then sits in the low mantissa bits.
    const ROUND: f32 = 12_582_912.0;
    const LN2_HIGH: f32 = 0.693_359_4;
    const LN2_LOW: f32 = -2.121_944_4e-4;
    let x = x.clamp(-87.0, 88.0);
    let shifted = x * std::f32::consts::LOG2_E + ROUND;
    let n = shifted - ROUND;
    let k = shifted.to_bits() as i32 - ROUND.to_bits() as i32;
    let f = (x - n * LN2_HIGH) - n * LN2_LOW;
    let p = 1.0
        + f * (1.0
            + f * (0.5
                + f * (1.0 / 6.0 + f * (1.0 / 24.0 + f * (1.0 / 120.0 + f * (1.0 / 720.0))))));
    p * f32::from_bits(((k + 127) << 23) as u32)
}

#[cfg(test)]
mod tests {
    use super::{erf, exp};

    /// The two approximations against f64 across their whole useful range.
    #[test]
    fn exp_and_erf_are_within_their_stated_error() {
        for i in -8700..=8800 {
            let x = i as f32 / 100.0;
            let want = (x as f64).exp();
            let got = exp(x) as f64;
            assert!(
                ((got - want) / want).abs() < 4e-7,
                "exp({x}) = {got}, want {want}"
            );
        }
        for i in -6000..=6000 {
            let x = i as f32 / 1000.0;
            let want = erf_f64(x as f64);
            let got = erf(x) as f64;
            assert!((got - want).abs() < 3e-7, "erf({x}) = {got}, want {want}");
        }
    }

    #[test]
    fn not_a_number_stays_not_a_number() {
        assert!(exp(f32::NAN).is_nan() && erf(f32::NAN).is_nan());
    }

    /// erf by its Maclaurin series (|x| < 3) or the asymptotic series of erfc (|x| ≥ 3, where
    /// its first five terms are within 1e-9): an f64 reference apart from the approximation
    /// under test.
    fn erf_f64(x: f64) -> f64 {
        if x.abs() < 3.0 {
            let (mut term, mut sum, mut n) = (x, x, 0.0);
            while term.abs() > 1e-17 * sum.abs().max(1e-300) {
                n += 1.0;
                term *= -x * x / n;
                sum += term / (2.0 * n + 1.0);
            }
            return 2.0 / std::f64::consts::PI.sqrt() * sum;
        }
        let a = x.abs();
        let u = 1.0 / (2.0 * a * a);
        let series = 1.0 - u + 3.0 * u * u - 15.0 * u.powi(3) + 105.0 * u.powi(4);
        let erfc = (-a * a).exp() / (a * std::f64::consts::PI.sqrt()) * series;
        (1.0 - erfc).copysign(x)
    }
}
