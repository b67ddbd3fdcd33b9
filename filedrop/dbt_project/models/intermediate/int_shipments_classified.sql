-- One row per shipment of a known order, classified by the timing rules of DESIGN §6.
-- Rules that depend on the run's as_of_date (undelivered) stay in the marts.
with

shipments as (

    select * from {{ ref('stg_shipment_deliveries') }}

),

orders as (

    select * from {{ ref('stg_orders') }}

),

joined as (

    select
        shipments.shipment_id,
        shipments.order_id,
        orders.product_id,
        orders.order_date,
        shipments.shipment_date,
        shipments.delivery_date,
        -- late: shipped 6 or more days after the order and not delivered (yet)
        coalesce(
            shipments.shipment_date >= orders.order_date + 6 and shipments.delivery_date is null,
            false
        ) as is_late,
        -- early: shipped within 6 days of the order, delivered or not
        coalesce(shipments.shipment_date < orders.order_date + 6, false) as is_early,
        -- neither shipped nor delivered
        (shipments.shipment_date is null and shipments.delivery_date is null) as is_unshipped

    from shipments
    inner join orders on shipments.order_id = orders.order_id

)

select * from joined
