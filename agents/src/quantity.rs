//! Kubernetes resource quantities (`100m`, `1.5`, `512Mi`, `2Gi`, `1e3`) as integers:
//! CPU in millicores, everything else in whole units (bytes, pods).

/// `text` in thousandths of its unit (millicores for CPU), rounded up as upstream's
/// `MilliValue`; None if it is not a quantity.
pub fn milli(text: &str) -> Option<i128> {
    let text = text.trim();
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.' || c == '+' || c == '-'))
        .unwrap_or(text.len());
    let (number, suffix) = text.split_at(split);
    if number.is_empty() {
        return None;
    }
    // The number as an exact decimal: digits and a power of ten.
    let (negative, digits) = match number.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, number.strip_prefix('+').unwrap_or(number)),
    };
    let (int_part, frac_part) = digits.split_once('.').unwrap_or((digits, ""));
    if int_part.is_empty() && frac_part.is_empty() {
        return None;
    }
    if !int_part.chars().chain(frac_part.chars()).all(|c| c.is_ascii_digit()) || frac_part.len() > 18 {
        return None;
    }
    let mantissa: i128 = format!("{int_part}{frac_part}").parse().ok()?;
    let mut exp10: i32 = -i32::try_from(frac_part.len()).ok()?;
    let mut factor: i128 = 1;
    match suffix {
        "" => {}
        "n" => exp10 -= 9,
        "u" => exp10 -= 6,
        "m" => exp10 -= 3,
        "k" => exp10 += 3,
        "M" => exp10 += 6,
        "G" => exp10 += 9,
        "T" => exp10 += 12,
        "P" => exp10 += 15,
        "E" => exp10 += 18,
        "Ki" => factor = 1 << 10,
        "Mi" => factor = 1 << 20,
        "Gi" => factor = 1 << 30,
        "Ti" => factor = 1 << 40,
        "Pi" => factor = 1 << 50,
        "Ei" => factor = 1 << 60,
        s if s.starts_with(['e', 'E']) => exp10 += s[1..].parse::<i32>().ok()?,
        _ => return None,
    }
    // Thousandths: one more factor of 1000.
    exp10 += 3;
    let mut value = mantissa.checked_mul(factor)?;
    if exp10 >= 0 {
        value = value.checked_mul(10i128.checked_pow(u32::try_from(exp10).ok()?)?)?;
    } else {
        let div = 10i128.checked_pow(u32::try_from(-exp10).ok()?)?;
        value = (value + div - 1) / div;
    }
    Some(if negative { -value } else { value })
}

/// `text` in whole units, rounded up.
pub fn value(text: &str) -> Option<i128> {
    milli(text).map(|m| (m + 999).div_euclid(1000))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantities_as_upstream_reads_them() {
        assert_eq!(milli("100m"), Some(100));
        assert_eq!(milli("1"), Some(1000));
        assert_eq!(milli("1.5"), Some(1500));
        assert_eq!(milli("0.0001"), Some(1), "rounded up");
        assert_eq!(value("512Mi"), Some(512 << 20));
        assert_eq!(value("2Gi"), Some(2 << 30));
        assert_eq!(value("1k"), Some(1000));
        assert_eq!(value("1e3"), Some(1000));
        assert_eq!(value("110"), Some(110));
        assert_eq!(milli("abc"), None);
        assert_eq!(milli("1Zi"), None);
        assert_eq!(milli(""), None);
    }
}
