-- One row per postal code (if_common.dim_addresses).
with

source as (

    select * from {{ if_common('dim_addresses') }}

),

renamed as (

    select
        cast(postal_code as text) as postal_code,
        cast(country as text) as country,
        cast(region as text) as region,
        cast(state as text) as state,
        cast(address as text) as address

    from source

)

select * from renamed
