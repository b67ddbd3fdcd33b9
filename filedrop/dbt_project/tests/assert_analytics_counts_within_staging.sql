-- The counts of the analytics row written by this run never exceed what staging holds: holiday
-- orders are orders, late and undelivered shipments are shipments. Returns the violating counts.
with

orders as (

    select count(*) as n from {{ ref('stg_orders') }}

),

shipments as (

    select count(*) as n from {{ ref('int_shipments_classified') }}

),

holiday as (

    select
        {% for m in ['jan', 'feb', 'mar', 'apr', 'may', 'jun', 'jul', 'aug', 'sep', 'oct', 'nov', 'dec'] -%}
        tt_order_hol_{{ m }}{{ ' + ' if not loop.last }}
        {%- endfor %} as n
    from {{ ref('agg_public_holiday') }}
    where ingestion_date = {{ ingestion_date() }}

),

late as (

    select tt_late_shipments + tt_undelivered_items as n
    from {{ ref('agg_shipments') }}
    where ingestion_date = {{ ingestion_date() }}

)

select 'public-holiday orders' as what, holiday.n as counted, orders.n as available
from holiday cross join orders
where holiday.n > orders.n

union all

select 'late + undelivered shipments', late.n, shipments.n
from late cross join shipments
where late.n > shipments.n
