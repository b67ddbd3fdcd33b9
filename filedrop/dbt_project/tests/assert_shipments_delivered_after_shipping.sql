{{ config(severity = 'warn') }}
-- A delivered shipment has a shipment date on or before its delivery date. A warning: the files come
-- from an upstream system filedrop does not own; the analytics rules still hold for such rows.
select *
from {{ ref('stg_shipment_deliveries') }}
where delivery_date is not null
    and (shipment_date is null or delivery_date < shipment_date)
