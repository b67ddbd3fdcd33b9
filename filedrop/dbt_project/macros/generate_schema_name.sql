{#-
    Schemas are named exactly as configured (not dbt's default `<target_schema>_<custom>`), so the
    brief's `{id}_staging` / `{id}_analytics` naming and an existing `if_common` schema are used as is:
    models go to the target schema (FILEDROP_ANALYTICS_SCHEMA), nodes with a custom schema to that schema.
-#}
{% macro generate_schema_name(custom_schema_name, node) -%}
    {%- if custom_schema_name is none -%}
        {{ target.schema }}
    {%- else -%}
        {{ custom_schema_name | trim }}
    {%- endif -%}
{%- endmacro %}
