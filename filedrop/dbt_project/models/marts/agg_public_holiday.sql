-- One row per ingestion_date: orders placed on a public holiday in the year up to as_of_date,
-- counted by calendar month of the order date (DESIGN §6).
{%- set months = ['jan', 'feb', 'mar', 'apr', 'may', 'jun', 'jul', 'aug', 'sep', 'oct', 'nov', 'dec'] %}
with

orders as (

    select * from {{ ref('stg_orders') }}

),

dates as (

    select * from {{ ref('stg_dates') }}

),

holiday_orders as (

    select dates.month_of_the_year_num
    from orders
    inner join dates on orders.order_date = dates.calendar_dt
    where dates.is_public_holiday
        and orders.order_date > cast({{ as_of_date() }} - interval '1 year' as date)
        and orders.order_date <= {{ as_of_date() }}

)

select
    {{ ingestion_date() }} as ingestion_date,
    {%- for month in months %}
    cast(count(*) filter (where month_of_the_year_num = {{ loop.index }}) as integer) as tt_order_hol_{{ month }}
    {{- "," if not loop.last }}
    {%- endfor %}

from holiday_orders
