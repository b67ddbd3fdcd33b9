"""The daily analytics (DESIGN §6): the dbt transform and how dbt is run (:mod:`~filedrop.analytics.transform`,
:mod:`~filedrop.analytics.dbt`), the generated dimensions (:mod:`~filedrop.analytics.dims`), the export to S3,
the docs site, and the Argo workflows defined with Hera (:mod:`~filedrop.analytics.workflows`) with the
compiler that turns them into the chart's templates (:mod:`~filedrop.analytics.chart`)."""
