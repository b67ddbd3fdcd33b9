-- One row per shipment: the most recently loaded version of each shipment_id.
with

source as (

    select * from {{ source('staging', 'shipment_deliveries') }}

),

renamed as (

    select
        cast(shipment_id as integer) as shipment_id,
        cast(order_id as integer) as order_id,
        cast(shipment_date as date) as shipment_date,
        cast(delivery_date as date) as delivery_date,
        _source_key,
        _load_id,
        _row_number,
        _loaded_at,
        row_number() over (
            partition by shipment_id
            order by _loaded_at desc, _row_number desc, _load_id desc
        ) as _version_rank

    from source

)

select
    shipment_id,
    order_id,
    shipment_date,
    delivery_date,
    _source_key,
    _load_id,
    _row_number,
    _loaded_at

from renamed
where _version_rank = 1
