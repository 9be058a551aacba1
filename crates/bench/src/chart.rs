//! Every benchmark's chart: a title, a note, and panels of horizontal bars
//! (one per row of the report, optionally with a min–max whisker), drawn
//! with plotters into an SVG string.
//!
//! Only plotters' SVG backend is used: text goes into the SVG as `<text>`
//! for the viewer's fonts, so rendering needs neither fontconfig nor font
//! files (plotters estimates label sizes itself).

use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

/// Colours the benchmarks share: the kernel alone or a rival (grey), weft
/// (blue), weft with a feature off (light blue), a highlight (amber).
pub const GREY: RGBColor = RGBColor(0x9a, 0x9a, 0x9a);
pub const LIGHT_GREY: RGBColor = RGBColor(0xb0, 0xb0, 0xb0);
pub const BLUE: RGBColor = RGBColor(0x2a, 0x7a, 0xb0);
pub const DARK_BLUE: RGBColor = RGBColor(0x1b, 0x4f, 0x72);
pub const LIGHT_BLUE: RGBColor = RGBColor(0x9c, 0xc3, 0xde);
pub const AMBER: RGBColor = RGBColor(0xd4, 0xa0, 0x17);

/// One bar: its row label, its value, and optionally the range the value
/// was taken from (a whisker).
#[derive(Debug, Clone, PartialEq)]
pub struct Bar {
    pub label: String,
    pub value: f64,
    pub range: Option<(f64, f64)>,
    pub color: RGBColor,
}

/// One metric over every row.
#[derive(Debug, Clone, PartialEq)]
pub struct Panel {
    pub title: String,
    /// Appended to each value label (" ms", "/s", "").
    pub unit: String,
    pub bars: Vec<Bar>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Chart {
    pub title: String,
    /// A line under the title (what the bars mean), or empty.
    pub note: String,
    pub width: u32,
    pub panels: Vec<Panel>,
}

const BAR_H: u32 = 28;
const PANEL_EXTRA: u32 = 56;
const LABEL_W: u32 = 170;

impl Chart {
    fn header_height(&self) -> u32 {
        if self.note.is_empty() {
            36
        } else {
            56
        }
    }

    fn panel_height(p: &Panel) -> u32 {
        PANEL_EXTRA + BAR_H * p.bars.len().max(1) as u32
    }

    /// The whole picture's size in pixels.
    pub fn size(&self) -> (u32, u32) {
        let panels: u32 = self.panels.iter().map(Self::panel_height).sum();
        (self.width, self.header_height() + panels + 10)
    }

    /// The chart as an SVG document.
    pub fn render_svg(&self) -> String {
        let mut svg = String::new();
        {
            let root = SVGBackend::with_string(&mut svg, self.size()).into_drawing_area();
            // drawing into a string cannot fail but for a bug in the layout
            self.draw(&root).expect("drawing a chart into a string");
            root.present().expect("finishing a chart's svg");
        }
        svg
    }

    fn draw<DB: DrawingBackend>(
        &self,
        root: &DrawingArea<DB, Shift>,
    ) -> Result<(), DrawingAreaErrorKind<DB::ErrorType>> {
        root.fill(&WHITE)?;
        let (header, mut rest) = root.split_vertically(self.header_height());
        header.draw(&Text::new(
            self.title.clone(),
            (10, 10),
            ("sans-serif", 15).into_font().style(FontStyle::Bold),
        ))?;
        if !self.note.is_empty() {
            header.draw(&Text::new(
                self.note.clone(),
                (10, 32),
                ("sans-serif", 12)
                    .into_font()
                    .color(&RGBColor(0x69, 0x69, 0x69)),
            ))?;
        }
        for p in &self.panels {
            let (area, below) = rest.split_vertically(Self::panel_height(p));
            draw_panel(&area, p)?;
            rest = below;
        }
        Ok(())
    }
}

fn draw_panel<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    p: &Panel,
) -> Result<(), DrawingAreaErrorKind<DB::ErrorType>> {
    let n = p.bars.len().max(1);
    let top = p
        .bars
        .iter()
        .flat_map(|b| [Some(b.value), b.range.map(|r| r.1)])
        .flatten()
        .filter(|v| v.is_finite())
        .fold(0.0, f64::max)
        .max(1e-9);
    // room right of the longest bar for its value
    let x_max = top * 1.22;
    let mut chart = ChartBuilder::on(area)
        .caption(
            p.title.clone(),
            ("sans-serif", 13).into_font().style(FontStyle::Bold),
        )
        .margin_left(10)
        .margin_right(20)
        .x_label_area_size(20)
        .y_label_area_size(LABEL_W)
        .build_cartesian_2d(0.0..x_max, 0.0..n as f64)
        .map_err(|e| match e {
            DrawingAreaErrorKind::BackendError(b) => DrawingAreaErrorKind::BackendError(b),
            DrawingAreaErrorKind::SharingError => DrawingAreaErrorKind::SharingError,
            DrawingAreaErrorKind::LayoutError => DrawingAreaErrorKind::LayoutError,
        })?;
    chart
        .configure_mesh()
        .disable_y_mesh()
        .max_light_lines(0)
        .x_labels(6)
        .y_labels(0)
        .label_style(("sans-serif", 12))
        .draw()?;
    // the first row on top; a row is one unit of y, its bar the middle 70%
    let mid = |i: usize| (n - 1 - i) as f64 + 0.5;
    // row labels sit left of the axis, outside the plotting area: placed in
    // the panel's pixels at the height plotters maps the row to
    let label_font =
        TextStyle::from(("sans-serif", 12).into_font()).pos(Pos::new(HPos::Right, VPos::Center));
    let base = area.get_base_pixel();
    for (i, b) in p.bars.iter().enumerate() {
        let (x, y) = chart.backend_coord(&(0.0, mid(i)));
        area.draw(&Text::new(
            b.label.clone(),
            (x - base.0 - 8, y - base.1),
            label_font.clone(),
        ))?;
    }
    let value_font =
        TextStyle::from(("sans-serif", 12).into_font()).pos(Pos::new(HPos::Left, VPos::Center));
    for (i, b) in p.bars.iter().enumerate() {
        let y = mid(i);
        if b.value.is_finite() {
            chart.draw_series(std::iter::once(Rectangle::new(
                [(0.0, y - 0.35), (b.value.max(0.0), y + 0.35)],
                b.color.filled(),
            )))?;
        }
        let mut end = b.value;
        if let Some((lo, hi)) = b.range.filter(|(lo, hi)| lo.is_finite() && hi.is_finite()) {
            let cap = |x: f64| {
                EmptyElement::at((x, y))
                    + PathElement::new(vec![(0, -6), (0, 6)], BLACK.stroke_width(1))
            };
            chart.draw_series(std::iter::once(PathElement::new(
                vec![(lo, y), (hi, y)],
                BLACK.stroke_width(1),
            )))?;
            chart.draw_series([cap(lo), cap(hi)])?;
            end = end.max(hi);
        }
        let text = if b.value.is_finite() {
            format!("{:.2}{}", b.value, p.unit)
        } else {
            "-".to_string()
        };
        let at = if end.is_finite() { end.max(0.0) } else { 0.0 };
        chart.draw_series(std::iter::once(
            EmptyElement::at((at, y)) + Text::new(text, (6, 0), value_font.clone()),
        ))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chart() -> Chart {
        Chart {
            title: "weft bench test".into(),
            note: "bars: median; whiskers: min-max".into(),
            width: 780,
            panels: vec![
                Panel {
                    title: "ADD latency, median (ms, lower is better)".into(),
                    unit: " ms".into(),
                    bars: vec![
                        Bar {
                            label: "bridge+host-local".into(),
                            value: 7.5,
                            range: None,
                            color: GREY,
                        },
                        Bar {
                            label: "weft".into(),
                            value: 2.25,
                            range: Some((2.0, 3.0)),
                            color: BLUE,
                        },
                    ],
                },
                Panel {
                    title: "burst (pods/s)".into(),
                    unit: "/s".into(),
                    bars: vec![Bar {
                        label: "weft".into(),
                        value: f64::NAN,
                        range: None,
                        color: BLUE,
                    }],
                },
            ],
        }
    }

    #[test]
    fn renders_every_title_label_and_value() {
        let c = chart();
        let svg = c.render_svg();
        assert!(svg.starts_with("<svg"), "{}", &svg[..80]);
        assert!(svg.trim_end().ends_with("</svg>"));
        let (w, h) = c.size();
        assert!(svg.contains(&format!(r#"width="{w}" height="{h}""#)));
        for text in [
            "weft bench test",
            "bars: median; whiskers: min-max",
            "ADD latency, median (ms, lower is better)",
            "burst (pods/s)",
            "bridge+host-local",
            "7.50 ms",
            "2.25 ms",
        ] {
            assert!(svg.contains(text), "{text} missing");
        }
        // two finite bars (the NaN one has none), the first the longest
        let bars: Vec<&str> = svg
            .lines()
            .filter(|l| l.contains(r##"fill="#9A9A9A""##) || l.contains(r##"fill="#2A7AB0""##))
            .collect();
        assert_eq!(bars.len(), 2, "{bars:?}");
        // an unknown value is shown as such, not as a bar of NaN
        assert!(!svg.contains("NaN"));
    }

    #[test]
    fn the_first_row_is_drawn_on_top() {
        let svg = chart().render_svg();
        let y_of = |label: &str| {
            let at = svg.find(&format!(">\n{label}\n</text>")).expect(label);
            let tag = &svg[svg[..at].rfind("<text").unwrap()..at];
            let y = tag.split(r#" y=""#).nth(1).unwrap();
            y[..y.find('"').unwrap()].parse::<f64>().unwrap()
        };
        assert!(y_of("bridge+host-local") < y_of("weft"));
    }
}
