INSERT INTO owners (first_name, last_name, address, city, telephone) VALUES
  ('George', 'Franklin', '110 W. Liberty St.', 'Madison', '6085551023'),
  ('Betty', 'Davis', '638 Cardinal Ave.', 'Sun Prairie', '6085551749'),
  ('Eduardo', 'Rodriquez', '2693 Commerce St.', 'McFarland', '6085558763'),
  ('Harold', 'Davis', '563 Friendly St.', 'Windsor', '6085553198'),
  ('Peter', 'McTavish', '2387 S. Fair Way', 'Madison', '6085552765'),
  ('Jean', 'Coleman', '105 N. Lake St.', 'Monona', '6085552654');

INSERT INTO pets (name, birth_date, type, owner_id) VALUES
  ('Leo', DATE '2020-09-07', 'cat', 1),
  ('Basil', DATE '2022-08-06', 'hamster', 2),
  ('Rosy', DATE '2021-04-17', 'dog', 3),
  ('Jewel', DATE '2020-03-07', 'dog', 3),
  ('Iggy', DATE '2020-11-30', 'lizard', 4),
  ('George', DATE '2020-01-20', 'snake', 5),
  ('Samantha', DATE '2022-09-04', 'cat', 6),
  ('Max', DATE '2022-09-04', 'cat', 6);

INSERT INTO visits (pet_id, visit_date, description) VALUES
  (7, DATE '2023-03-04', 'rabies shot'),
  (8, DATE '2023-03-04', 'rabies shot'),
  (8, DATE '2023-06-04', 'neutered'),
  (7, DATE '2023-09-04', 'spayed'),
  (1, DATE '2024-01-15', 'annual checkup');
