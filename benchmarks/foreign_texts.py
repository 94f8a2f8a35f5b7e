"""Hand-written texts in languages and formats the packaged corpus lacks (for manifold_score.py).

The corpus is English prose, plays, manuals and Python code; these are French and German prose
and JSON and CSV data, written for this benchmark (no third-party text), one document each.
"""

FRENCH_GERMAN: tuple[str, ...] = (
    "Le matin, la petite ville se réveille lentement. Les boulangers ouvrent leurs portes et "
    "l'odeur du pain chaud se répand dans les rues étroites. Les enfants marchent vers l'école "
    "en riant, tandis que les vieux messieurs s'installent à la terrasse du café pour lire le "
    "journal et discuter de la météo.",
    "Nous avons passé nos vacances au bord de la mer, dans une maison louée près du port. "
    "Chaque soir, nous regardions les bateaux rentrer avec leur pêche du jour. Ma sœur a appris "
    "à faire de la voile, et mon père a enfin terminé le roman qu'il avait commencé l'année "
    "dernière.",
    "La réunion du conseil municipal a duré plus de trois heures. Les habitants ont demandé "
    "davantage de pistes cyclables, un nouveau parc pour les familles et des horaires de bus "
    "plus pratiques. Le maire a promis d'étudier toutes les propositions avant la fin du mois.",
    "Am Wochenende sind wir mit dem Zug in die Berge gefahren. Das Wetter war zuerst neblig, "
    "aber am Nachmittag kam die Sonne heraus, und wir konnten bis zum Gipfel wandern. Oben gab "
    "es eine kleine Hütte, in der wir Suppe gegessen und heißen Tee getrunken haben.",
    "Die Bibliothek unserer Stadt wurde im letzten Jahr renoviert. Jetzt gibt es helle "
    "Leseräume, eine Ecke für Kinder und viele Computer, die man kostenlos benutzen darf. "
    "Besonders am Abend kommen viele Studenten, um in Ruhe zu lernen.",
    "Meine Großmutter hat mir beigebracht, wie man Apfelkuchen backt. Zuerst schneidet man die "
    "Äpfel in dünne Scheiben, dann rührt man Butter, Zucker und Eier zu einem glatten Teig. "
    "Nach vierzig Minuten im Ofen duftet die ganze Wohnung nach Zimt.",
)

JSON_CSV: tuple[str, ...] = (
    '{"id": 1042, "name": "Alice Martin", "email": "alice.martin@example.org", "active": true, '
    '"roles": ["admin", "editor"], "last_login": "2024-03-18T09:41:27Z", "preferences": '
    '{"theme": "dark", "language": "en", "notifications": {"email": false, "sms": true}}}',
    '[{"sku": "TBL-0031", "price": 129.99, "stock": 14, "tags": ["wood", "oak"]}, '
    '{"sku": "CHR-0207", "price": 49.5, "stock": 0, "tags": ["metal"]}, '
    '{"sku": "LMP-1180", "price": 23.0, "stock": 312, "tags": ["led", "desk", "white"]}, '
    '{"sku": "SHF-0444", "price": 88.25, "stock": 7, "tags": []}]',
    '{"type": "FeatureCollection", "features": [{"type": "Feature", "geometry": {"type": '
    '"Point", "coordinates": [2.3522, 48.8566]}, "properties": {"city": "Paris", "population": '
    '2102650}}, {"type": "Feature", "geometry": {"type": "Point", "coordinates": [13.405, '
    '52.52]}, "properties": {"city": "Berlin", "population": 3755251}}]}',
    "date,station,temp_min,temp_max,rain_mm,wind_kmh\n2023-01-01,LYS,-1.2,6.8,0.0,12\n"
    "2023-01-02,LYS,0.4,8.1,2.3,18\n2023-01-03,LYS,3.0,9.9,11.6,27\n2023-01-04,LYS,2.2,7.5,"
    "4.1,22\n2023-01-05,LYS,-0.8,5.0,0.0,9\n2023-01-06,LYS,-2.5,4.2,0.0,6\n",
    "order_id,customer,product,quantity,unit_price,total\n50001,C-3321,widget-a,3,4.99,14.97\n"
    "50002,C-0875,widget-b,1,19.00,19.00\n50003,C-3321,gadget-x,12,0.75,9.00\n50004,C-1209,"
    "widget-a,7,4.99,34.93\n50005,C-0040,gizmo-7,2,129.50,259.00\n",
    "gene,chromosome,start,end,strand,expression\nBRCA1,17,43044295,43125483,-,12.4\nTP53,17,"
    "7668402,7687550,-,33.1\nEGFR,7,55019017,55211628,+,8.7\nMYC,8,127735434,127742951,+,51.0\n"
    "KRAS,12,25205246,25250929,-,17.9\n",
)
