-- One row per customer (if_common.dim_customers).
with

source as (

    select * from {{ if_common('dim_customers') }}

),

renamed as (

    select
        cast(customer_id as integer) as customer_id,
        cast(customer_name as text) as customer_name,
        cast(postal_code as text) as postal_code

    from source

)

select * from renamed
