-- For every day's best product, the star percentages add up to 100 (up to rounding: 5 × 0.005) and
-- early + late shipments make exactly 100. Returns the rows that do not.
select *
from {{ ref('best_performing_product') }}
where abs(
        pct_one_star_review + pct_two_star_review + pct_three_star_review
        + pct_four_star_review + pct_five_star_review - 100
    ) > 0.025
    or pct_early_shipments + pct_late_shipments <> 100
