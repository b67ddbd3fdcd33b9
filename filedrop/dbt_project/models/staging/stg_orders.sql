-- One row per order: the most recently loaded version of each order_id.
with

source as (

    select * from {{ source('staging', 'orders') }}

),

renamed as (

    select
        cast(order_id as integer) as order_id,
        cast(customer_id as integer) as customer_id,
        cast(product_id as integer) as product_id,
        cast(order_date as date) as order_date,
        cast(unit_price as integer) as unit_price,
        cast(quantity as integer) as quantity,
        cast(total_price as integer) as total_price,
        _source_key,
        _load_id,
        _row_number,
        _loaded_at,
        row_number() over (
            partition by order_id
            order by _loaded_at desc, _row_number desc, _load_id desc
        ) as _version_rank

    from source

)

select
    order_id,
    customer_id,
    product_id,
    order_date,
    unit_price,
    quantity,
    total_price,
    _source_key,
    _load_id,
    _row_number,
    _loaded_at

from renamed
where _version_rank = 1
