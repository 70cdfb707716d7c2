//! Fixture: a plain component. It does not target `cordon:plugin`; it exports `add` and the
//! `test:calc/ops` interface, and Cordon serves each function as a tool with a schema derived
//! from its WIT types.

wit_bindgen::generate!({ world: "calc", path: "wit" });

use exports::test::calc::ops::{CalcError, Guest as Ops, Point, Rounding, Shape, Style};

struct Calc;

impl Guest for Calc {
    fn add(a: i32, b: i32) -> i32 {
        a.wrapping_add(b)
    }
}

impl Ops for Calc {
    fn divide(a: i32, b: i32) -> Result<i32, CalcError> {
        if b == 0 {
            return Err(CalcError::DivideByZero);
        }
        a.checked_div(b).ok_or_else(|| CalcError::Overflow(format!("{a} / {b} overflows s32")))
    }

    fn centroid(points: Vec<Point>) -> Point {
        let n = points.len().max(1) as f64;
        let (x, y) = points.iter().fold((0.0, 0.0), |(x, y), p| (x + p.x, y + p.y));
        let labels: Vec<String> = points.into_iter().filter_map(|p| p.label).collect();
        Point { x: x / n, y: y / n, label: if labels.is_empty() { None } else { Some(labels.join("+")) } }
    }

    fn area(shape: Shape) -> f64 {
        match shape {
            Shape::Circle(r) => std::f64::consts::PI * r * r,
            Shape::Square(side) => side * side,
            Shape::Dot => 0.0,
        }
    }

    fn round(x: f64, mode: Rounding) -> i64 {
        match mode {
            Rounding::Down => x.floor() as i64,
            Rounding::Nearest => x.round() as i64,
            Rounding::Up => x.ceil() as i64,
        }
    }

    fn describe_style(style: Style, pair: (u8, char)) -> String {
        let mut parts = Vec::new();
        if style.contains(Style::BOLD) {
            parts.push("bold");
        }
        if style.contains(Style::ITALIC) {
            parts.push("italic");
        }
        format!("{} {}{}", parts.join("+"), pair.0, pair.1)
    }

    fn bytes(n: u32) -> Vec<u8> {
        (0..n).map(|i| (i % 251) as u8).collect()
    }

    fn spin(iterations: u64) -> u64 {
        let mut acc = 0u64;
        for i in 0..iterations {
            acc = std::hint::black_box(acc.wrapping_mul(31).wrapping_add(i));
        }
        acc
    }
}

export!(Calc);
