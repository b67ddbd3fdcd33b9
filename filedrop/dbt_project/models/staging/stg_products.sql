-- One row per product (if_common.dim_products).
with

source as (

    select * from {{ if_common('dim_products') }}

),

renamed as (

    select
        cast(product_id as integer) as product_id,
        cast(product_category as text) as product_category,
        cast(product_name as text) as product_name

    from source

)

select * from renamed
