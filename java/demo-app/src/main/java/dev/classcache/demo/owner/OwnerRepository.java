package dev.classcache.demo.owner;

import java.util.List;
import java.util.Optional;

import org.springframework.data.jpa.repository.EntityGraph;
import org.springframework.data.jpa.repository.JpaRepository;

public interface OwnerRepository extends JpaRepository<Owner, Long> {

	@EntityGraph(attributePaths = "pets")
	List<Owner> findAllByOrderByLastNameAscFirstNameAsc();

	@EntityGraph(attributePaths = "pets")
	Optional<Owner> findWithPetsById(Long id);

}
