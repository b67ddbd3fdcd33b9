-- One row per ingestion_date: the product with the most reviews and how it sold and shipped (DESIGN §6).
{%- set stars = ['one', 'two', 'three', 'four', 'five'] %}
with

reviews as (

    select * from {{ ref('stg_reviews') }}

),

orders as (

    select * from {{ ref('stg_orders') }}

),

products as (

    select * from {{ ref('stg_products') }}

),

dates as (

    select * from {{ ref('stg_dates') }}

),

shipments as (

    select * from {{ ref('int_shipments_classified') }}

),

review_totals as (

    select
        product_id,
        count(*) as reviews,
        sum(review) as review_points,
        {%- for star in stars %}
        count(*) filter (where review = {{ loop.index }}) as {{ star }}_star_reviews
        {{- "," if not loop.last }}
        {%- endfor %}

    from reviews
    group by product_id

),

-- most reviews; ties: more review points, then the lower product_id
best_product as (

    select *
    from review_totals
    order by reviews desc, review_points desc, product_id asc
    limit 1

),

order_days as (

    select
        orders.order_date,
        count(*) as orders,
        sum(orders.quantity) as quantity

    from orders
    inner join best_product on orders.product_id = best_product.product_id
    group by orders.order_date

),

-- most orders; ties: the larger quantity, then the earlier date
most_ordered_day as (

    select order_date
    from order_days
    order by orders desc, quantity desc nulls last, order_date asc
    limit 1

),

shipment_timing as (

    select
        count(*) filter (where shipments.is_late) as late_shipments,
        count(*) filter (where shipments.is_early) as early_shipments

    from shipments
    inner join best_product on shipments.product_id = best_product.product_id

),

late_share as (

    select
        round(100.0 * late_shipments / nullif(early_shipments + late_shipments, 0), 2) as pct_late

    from shipment_timing

)

select
    {{ ingestion_date() }} as ingestion_date,
    cast(products.product_name as text) as product_name,
    cast(most_ordered_day.order_date as date) as most_ordered_day,
    cast(dates.is_public_holiday as boolean) as is_public_holiday,
    cast(best_product.review_points as integer) as tt_review_points,
    {%- for star in stars %}
    cast(round(100.0 * best_product.{{ star }}_star_reviews / best_product.reviews, 2) as numeric(5, 2))
        as pct_{{ star }}_star_review,
    {%- endfor %}
    cast(100 - late_share.pct_late as numeric(5, 2)) as pct_early_shipments,
    cast(late_share.pct_late as numeric(5, 2)) as pct_late_shipments

from best_product
inner join products on best_product.product_id = products.product_id
cross join late_share
left join most_ordered_day on true
left join dates on most_ordered_day.order_date = dates.calendar_dt
