-- One row per ingestion_date: late shipments and undelivered items as of as_of_date (DESIGN §6).
with

shipments as (

    select * from {{ ref('int_shipments_classified') }}

)

select
    {{ ingestion_date() }} as ingestion_date,
    cast(count(*) filter (where is_late) as integer) as tt_late_shipments,
    cast(
        count(*) filter (where is_unshipped and order_date <= {{ as_of_date() }} - 15) as integer
    ) as tt_undelivered_items

from shipments
